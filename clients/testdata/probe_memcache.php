<?php
// ext-memcache behaviours that matter on a queue. usage: HOST PORT QUEUE
[, $host, $port, $q] = $argv;
$m = new Memcache();
$m->addServer($host, (int)$port, false); // default timeout: 1 s
printf("delete_miss=%s\n", var_export($m->delete($q), true));
$t = microtime(true);
$v = $m->get("$q/t=300");
printf("wait_under_timeout=%s ms=%d\n", var_export($v, true), (microtime(true) - $t) * 1000);
$t = microtime(true);
$v = @$m->get("$q/t=1500");
printf("wait_over_timeout=%s ms=%d %s\n", var_export($v, true), (microtime(true) - $t) * 1000, error_get_last()['message'] ?? '');
$ok = @$m->set($q, 'next');
printf("next_command=%s\n", var_export($ok, true)); // the server is marked failed for retry_interval (15 s)
