<?php
// ext-memcached behaviours that matter on a queue. usage: HOST PORT QUEUE
[, $host, $port, $q] = $argv;
function client($host, $port) {
    $m = new Memcached();
    $m->addServer($host, (int)$port);
    if (getenv('MC_BINARY')) $m->setOption(Memcached::OPT_BINARY_PROTOCOL, true);
    return $m;
}
$m = client($host, $port);
printf("delete_miss=%s %s\n", var_export($m->delete($q), true), $m->getResultCode() == Memcached::RES_NOTFOUND ? 'RES_NOTFOUND' : $m->getResultMessage());
printf("poll_timeout_ms=%d compression_threshold=%s\n", $m->getOption(Memcached::OPT_POLL_TIMEOUT), ini_get('memcached.compression_threshold'));
$t = microtime(true);
$v = $m->get("$q/t=300");
printf("wait_under_timeout=%s %s ms=%d\n", var_export($v, true), $m->getResultCode() == Memcached::RES_NOTFOUND ? 'RES_NOTFOUND' : $m->getResultMessage(), (microtime(true) - $t) * 1000);
$m = client($host, $port);
$m->setOption(Memcached::OPT_POLL_TIMEOUT, 300);
$v = $m->get("$q/t=1500");
printf("wait_over_timeout=%s %s\n", var_export($v, true), $m->getResultMessage());
$m->set($q, 'next');
printf("next_command=%s %s\n", var_export($m->get($q), true), $m->getResultMessage());
