<?php
// Worker with PHP's older ext-memcache (php-memcache): get reserves a job,
// delete acks it. A worker that dies before delete loses nothing.
// usage: php memcache_worker.php SERVERS QUEUE[,QUEUE...] [MAX] [IDLE_SECONDS] [crash]
[, $servers, $queues] = $argv;
$queues = explode(',', $queues);
$max = (int)($argv[3] ?? 0);
$idle = (float)($argv[4] ?? 5);
$crash = ($argv[5] ?? '') === 'crash';

$mc = new Memcache();
foreach (explode(',', $servers) as $server) {
    [$host, $port] = explode(':', $server);
    $mc->addServer($host, (int)$port, false, 1, 6);
}

$done = 0;
$lastJob = microtime(true);
while ($max === 0 || $done < $max) {
    $jobs = $mc->get($queues) ?: []; // an array of keys is a multi-get: [queue => job]
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
        if (!$mc->delete($queue)) {
            fwrite(STDERR, "delete $queue: not found (lease ran out?)\n");
        }
        $done++;
        $lastJob = microtime(true);
    }
}
