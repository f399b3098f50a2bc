<?php
// ext-memcached logging in with SASL PLAIN (binary protocol; needs
// memcached.use_sasl=1). usage: HOST PORT QUEUE USER PASSWORD
[, $host, $port, $q, $user, $pass] = $argv;
function client($host, $port, $user, $pass) {
    $m = new Memcached();
    $m->setOption(Memcached::OPT_BINARY_PROTOCOL, true);
    $m->addServer($host, (int)$port);
    $m->setSaslAuthData($user, $pass);
    return $m;
}
$m = client($host, $port, $user, 'wrong');
printf("wrong_password_set=%s\n", var_export($m->set($q, 'x'), true));
$m = client($host, $port, $user, $pass);
printf("set=%s %s\n", var_export($m->set($q, 'hello'), true), $m->getResultMessage());
printf("get=%s\n", var_export($m->get($q), true));
printf("delete=%s\n", var_export($m->delete($q), true));
