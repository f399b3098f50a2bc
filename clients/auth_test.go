package clients

import (
	"crypto/rand"
	"encoding/hex"
	"regexp"
	"testing"
	"time"

	"github.com/mcbridge/mcbridge/config"
	"github.com/mcbridge/mcbridge/internal/testbroker"
	"github.com/mcbridge/mcbridge/internal/testgateway"
)

// Each library logs in to a gateway with auth.mode broker as a broker user
// made for the test: a wrong password gets nothing done, the right one
// lets it set, reserve and ack.
func TestAuthClients(t *testing.T) {
	cfg := testgateway.Config()
	cfg.Auth.Mode = config.AuthBroker
	g := testgateway.Start(t, cfg, testgateway.Options{})
	host, port := hostPort(g.Addr)

	var b [4]byte
	_, _ = rand.Read(b[:])
	user, password := "mcbt-clients-"+hex.EncodeToString(b[:]), "s3cret pass"
	if out, err := testbroker.Rabbitmqctl("add_user", user, password); err != nil {
		t.Fatalf("add_user: %v: %s", err, out)
	}
	t.Cleanup(func() { _, _ = testbroker.Rabbitmqctl("delete_user", user) })
	if out, err := testbroker.Rabbitmqctl("set_permissions", "-p", "/", user, ".*", ".*", ".*"); err != nil {
		t.Fatalf("set_permissions: %v: %s", err, out)
	}

	for _, tc := range []struct {
		name     string
		packages []string
		argv     []string
		want     []string
		// depth is what the queue holds after the client ran.
		depth int
	}{
		{
			name:     "php-memcached-sasl",
			packages: []string{"php-cli", "php-memcached"},
			argv:     []string{php, "-d", "memcached.use_sasl=1", "clients/testdata/auth_memcached.php"},
			want: []string{`(?m)^wrong_password_set=false$`, `(?m)^set=true SUCCESS$`,
				`(?m)^get='hello'$`, `(?m)^delete=true$`},
		},
		{
			name:     "dalli",
			packages: []string{"ruby-dalli"},
			argv:     []string{ruby, "clients/testdata/auth_dalli.rb"},
			want: []string{`(?m)^wrong_password_set=(false|nil|Dalli::\w+)$`, `(?m)^set=true$`,
				`(?m)^get="hello"$`, `(?m)^delete=true$`},
		},
		{
			name:     "python-memcached",
			packages: []string{"python3-memcache"},
			argv:     []string{python, "clients/testdata/auth_memcache.py"},
			want: []string{`(?m)^wrong_login=False$`, `(?m)^login=True$`,
				`(?m)^set=True$`, `(?m)^get=(b?'hello')$`, `(?m)^delete=1$|(?m)^delete=True$`},
		},
		{
			name:     "pymemcache",
			packages: []string{"python3-pymemcache"},
			argv:     []string{python, "clients/testdata/auth_pymemcache.py"},
			want: []string{`(?m)^wrong_login=MemcacheClientError .*authentication failure`, `(?m)^login=True$`,
				`(?m)^set=True$`, `(?m)^get=b'hello'$`, `(?m)^delete=True$`},
		},
		{
			name:     "php-memcache",
			packages: []string{"php-cli", "php-memcache"},
			argv:     []string{php, "clients/testdata/auth_memcache.php"},
			want: []string{`(?m)^wrong_login=false$`, `(?m)^login=true$`, `(?m)^set=true$`,
				`(?m)^get='hello'$`, `(?m)^delete=true$`},
		},
		{
			name:     "libmemcached-tools",
			packages: []string{"libmemcached-tools"},
			argv:     []string{"/bin/sh", "clients/testdata/auth_memc.sh"},
			want:     []string{`(?m)^wrong_password_exit=[1-9]\d*$`, `(?m)^set_exit=0$`, `(?m)^get=hello$`},
			depth:    1,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			requirePackages(t, tc.packages...)
			q := testbroker.Name(t, "auth")
			r := mustRun(t, 60*time.Second, nil, append(append([]string{}, tc.argv...), host, port, q, user, password)...)
			for _, want := range tc.want {
				if !regexp.MustCompile(want).MatchString(r.stdout) {
					t.Errorf("output does not match %s:\n%s\nstderr:\n%s", want, r.stdout, r.stderr)
				}
			}
			if n := testbroker.QueueDepth(t, q); n != tc.depth {
				t.Errorf("queue %s holds %d after the client ran, want %d", q, n, tc.depth)
			}
		})
	}
}
