<?php
// ext-memcache (no SASL) logging in with the text login: a first set whose
// value is "user password". usage: HOST PORT QUEUE USER PASSWORD
[, $host, $port, $q, $user, $pass] = $argv;
$m = new Memcache();
// A login waits for the broker to check the password: more than the
// default 1 s timeout.
$m->addServer($host, (int)$port, false, 1, 10);
printf("wrong_login=%s\n", var_export($m->set('auth', "$user wrong"), true));
printf("login=%s\n", var_export($m->set('auth', "$user $pass"), true));
printf("set=%s\n", var_export($m->set($q, 'hello'), true));
printf("get=%s\n", var_export($m->get($q), true));
printf("delete=%s\n", var_export($m->delete($q), true));
