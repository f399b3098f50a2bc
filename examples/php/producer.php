<?php
// Producer with PHP's ext-memcached (php-memcached): enqueue COUNT jobs.
// usage: php producer.php SERVERS QUEUE COUNT [BODY_BYTES]
//        SERVERS = host:port[,host:port...], e.g. 127.0.0.1:11211
[, $servers, $queue, $count] = $argv;
$bytes = (int)($argv[4] ?? 0);

$mc = new Memcached();
foreach (explode(',', $servers) as $server) {
    [$host, $port] = explode(':', $server);
    $mc->addServer($host, (int)$port);
}
if (getenv('MC_BINARY')) {
    $mc->setOption(Memcached::OPT_BINARY_PROTOCOL, true); // the binary protocol works too
}
// set() returns once RabbitMQ has confirmed the message: keep the poll timeout
// (default 5000 ms) above mcbridge's amqp.confirm_timeout (default 5s).
$mc->setOption(Memcached::OPT_POLL_TIMEOUT, 6000);

for ($i = 1; $i <= (int)$count; $i++) {
    // Arrays are serialized and values over 2000 bytes compressed; the client
    // says so in the flags, which mcbridge keeps in the AMQP header x-mc-flags.
    $job = ['id' => $i, 'body' => "payload $i " . str_repeat('x', $bytes)];
    if (!$mc->set($queue, $job)) { // false: NOT_STORED or SERVER_ERROR
        fwrite(STDERR, "set $queue: {$mc->getResultMessage()}\n");
        exit(1);
    }
    echo "stored $i\n";
}
