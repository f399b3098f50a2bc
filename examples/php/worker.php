<?php
// Worker with PHP's ext-memcached (php-memcached): get reserves a job, delete
// acks it once it is done. A worker that dies before delete loses nothing:
// mcbridge puts the job back in the queue when the connection closes.
// usage: php worker.php SERVERS QUEUE[,QUEUE...] [MAX] [IDLE_SECONDS] [crash]
[, $servers, $queues] = $argv;
$queues = explode(',', $queues);
$max = (int)($argv[3] ?? 0);           // stop after MAX jobs (0: no limit)
$idle = (float)($argv[4] ?? 5);        // stop after IDLE_SECONDS without a job
$crash = ($argv[5] ?? '') === 'crash'; // demo: die while holding a job

$mc = new Memcached();
foreach (explode(',', $servers) as $server) {
    [$host, $port] = explode(':', $server);
    $mc->addServer($host, (int)$port);
}
if (getenv('MC_BINARY')) {
    $mc->setOption(Memcached::OPT_BINARY_PROTOCOL, true);
}

$done = 0;
$lastJob = microtime(true);
while ($max === 0 || $done < $max) {
    $jobs = $mc->getMulti($queues); // one job per queue, in one round trip
    if ($jobs === false) {
        fwrite(STDERR, "get: {$mc->getResultMessage()}\n");
        $jobs = [];
    }
    if (!$jobs) {
        if (microtime(true) - $lastJob > $idle) {
            break;
        }
        usleep(100000);
        continue;
    }
    foreach ($jobs as $queue => $job) {
        if ($crash) {
            echo "crashed holding ", json_encode($job), "\n";
            exit(3);
        }
        echo "consumed ", json_encode($job), "\n"; // process the job here
        if (!$mc->delete($queue)) { // RES_NOTFOUND: the lease ran out, someone else has it
            fwrite(STDERR, "delete $queue: {$mc->getResultMessage()}\n");
        }
        $done++;
        $lastJob = microtime(true);
    }
}
