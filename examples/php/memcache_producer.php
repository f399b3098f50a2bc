<?php
// Producer with PHP's older ext-memcache (php-memcache): enqueue COUNT jobs.
// usage: php memcache_producer.php SERVERS QUEUE COUNT [BODY_BYTES]
[, $servers, $queue, $count] = $argv;
$bytes = (int)($argv[4] ?? 0);

$mc = new Memcache();
foreach (explode(',', $servers) as $server) {
    [$host, $port] = explode(':', $server);
    // not persistent; timeout 6 s: above mcbridge's confirm_timeout (5s), since
    // set() waits for RabbitMQ's confirm (the default timeout is 1 s).
    $mc->addServer($host, (int)$port, false, 1, 6);
}

for ($i = 1; $i <= (int)$count; $i++) {
    $job = ['id' => $i, 'body' => "payload $i " . str_repeat('x', $bytes)];
    // Arrays are serialized (flag 1); MEMCACHE_COMPRESSED (flag 2) zlib-compresses.
    $flags = $bytes > 2000 ? MEMCACHE_COMPRESSED : 0;
    if (!$mc->set($queue, $job, $flags)) {
        fwrite(STDERR, "set $queue failed\n");
        exit(1);
    }
    echo "stored $i\n";
}
