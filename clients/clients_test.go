package clients

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mcbridge/mcbridge/internal/testbroker"
	"github.com/mcbridge/mcbridge/internal/testgateway"
)

// lang is one client library with its example programs.
type lang struct {
	packages []string // Debian packages it needs
	env      []string // extra environment of every run (e.g. the binary protocol)
	producer []string // argv before SERVERS QUEUE COUNT BODY_BYTES
	worker   []string // argv before SERVERS QUEUES MAX IDLE_SECONDS [crash]
	// crashArgs turns a worker argv into one that exits holding a job.
	crashArgs func(argv []string) []string

	flags    int64 // x-mc-flags the client writes for a job (a serialized structure)
	bigFlags int64 // ... and for a job with a big body (compressed where the client does)
	bigSize  int   // body bytes of the big job
	shrinks  bool  // the client compresses the big job

	probe     []string // argv before HOST PORT QUEUE of testdata/probe_*
	probeWant []string // regexps the probe's output must match, one per behaviour
}

const (
	php    = "/usr/bin/php"
	python = "/usr/bin/python3" // Debian's, with the python3-* modules
	ruby   = "/usr/bin/ruby"
)

func appendCrash(argv []string) []string { return append(argv, "crash") }

// phpMemcached is ext-memcached over the text protocol.
var phpMemcached = lang{
	packages:  []string{"php-cli", "php-memcached"},
	producer:  []string{php, "examples/php/producer.php"},
	worker:    []string{php, "examples/php/worker.php"},
	crashArgs: appendCrash,
	// php serializer (4); over memcached.compression_threshold (2000 bytes)
	// also compressed (1<<4) with fastlz (1<<6; zlib would be 1<<5).
	flags: 4, bigFlags: 4 | 1<<4 | 1<<6, bigSize: 100000, shrinks: true,
	probe: []string{php, "clients/testdata/probe_memcached.php"},
	probeWant: []string{
		`(?m)^delete_miss=false RES_NOTFOUND$`,
		`(?m)^poll_timeout_ms=5000 compression_threshold=2000$`,
		`(?m)^wait_under_timeout=false RES_NOTFOUND ms=(3\d\d|[4-9]\d\d)$`,
		`(?m)^wait_over_timeout=false A TIMEOUT OCCURRED$`,
		`(?m)^next_command='next' SUCCESS$`, // libmemcached reconnects at once
	},
}

func TestPHPMemcached(t *testing.T) { testLang(t, phpMemcached) }

func TestPHPMemcachedBinary(t *testing.T) {
	l := phpMemcached
	l.env = []string{"MC_BINARY=1"}
	testLang(t, l)
}

func TestPHPMemcache(t *testing.T) {
	testLang(t, lang{
		packages:  []string{"php-cli", "php-memcache"},
		producer:  []string{php, "examples/php/memcache_producer.php"},
		worker:    []string{php, "examples/php/memcache_worker.php"},
		crashArgs: appendCrash,
		// MMC_SERIALIZED (1); MEMCACHE_COMPRESSED (2) as the example asks.
		flags: 1, bigFlags: 1 | 2, bigSize: 100000, shrinks: true,
		probe: []string{php, "clients/testdata/probe_memcache.php"},
		probeWant: []string{
			`(?m)^delete_miss=false$`,
			`(?m)^wait_under_timeout=false ms=(3\d\d|[4-9]\d\d)$`,
			// The default 1 s timeout ends the wait; the server is then
			// marked failed and skipped for retry_interval (15 s).
			`(?m)^wait_over_timeout=false ms=1\d\d\d .*failed with: Network timeout`,
			`(?m)^next_command=false$`,
		},
	})
}

func TestPythonMemcached(t *testing.T) {
	testLang(t, lang{
		packages:  []string{"python3", "python3-memcache"},
		producer:  []string{python, "examples/python/producer.py"},
		worker:    []string{python, "examples/python/worker.py"},
		crashArgs: appendCrash,
		// A dict is pickled (1); no compression unless min_compress_len is set.
		flags: 1, bigFlags: 1, bigSize: 100000,
		probe: []string{python, "clients/testdata/probe_memcache.py"},
		probeWant: []string{
			`(?m)^delete_miss=1$`, // NOT_FOUND is "success" to python-memcached
			`(?m)^socket_timeout=3 dead_retry=30$`,
			`(?m)^wait_under_timeout=None ms=(3\d\d|[4-9]\d\d)$`,
			`(?m)^wait_over_timeout=None$`, // a timeout reads as a miss
			`(?m)^next_command=0$`,         // and the server is dead for 30 s
		},
	})
}

func TestPymemcache(t *testing.T) {
	testLang(t, lang{
		packages:  []string{"python3", "python3-pymemcache"},
		producer:  []string{python, "examples/python/pymemcache_producer.py"},
		worker:    []string{python, "examples/python/pymemcache_worker.py"},
		crashArgs: appendCrash,
		// serde.pickle_serde: python-memcached's flags, pickle (1).
		flags: 1, bigFlags: 1, bigSize: 100000,
		probe: []string{python, "clients/testdata/probe_pymemcache.py"},
		probeWant: []string{
			`(?m)^default_noreply=True timeout=None$`,
			`(?m)^delete_miss=True delete_miss_noreply_false=False$`,
			`(?m)^refused_set_default=True$`, // noreply: the error is never seen
			`(?m)^refused_set_noreply_false=MemcacheClientError$`,
			`(?m)^wait_under_timeout=None ms=(3\d\d|[4-9]\d\d)$`,
			`(?m)^wait_over_timeout=TimeoutError$`,
			`(?m)^next_command=True$`,
		},
	})
}

func TestDalli(t *testing.T) {
	testLang(t, lang{
		packages:  []string{"ruby", "ruby-dalli"},
		producer:  []string{ruby, "examples/ruby/producer.rb"},
		worker:    []string{ruby, "examples/ruby/worker.rb"},
		crashArgs: appendCrash,
		// Marshal (1); zlib above 4 KiB (2).
		flags: 1, bigFlags: 1 | 2, bigSize: 100000, shrinks: true,
		probe: []string{ruby, "clients/testdata/probe_dalli.rb"},
		probeWant: []string{
			`(?m)^delete_miss=nil$`,
			`(?m)^socket_timeout=1$`,
			`(?m)^wait_under_timeout=nil ms=(3\d\d|[4-9]\d\d)$`,
			`(?m)^wait_over_timeout=retries_forever$`,
		},
	})
}

func TestGomemcache(t *testing.T) {
	testLang(t, lang{
		producer: []string{goBin + "/producer"},
		worker:   []string{goBin + "/worker", "-workers", "3"},
		crashArgs: func(argv []string) []string {
			return append([]string{argv[0], "-crash"}, argv[1:]...)
		},
		// gomemcache never transforms values: the example writes JSON, flags 0.
		flags: 0, bigFlags: 0, bigSize: 100000,
	})
}

// testLang runs every behaviour with one client's example programs.
func testLang(t *testing.T, l lang) {
	t.Parallel()
	requirePackages(t, l.packages...)
	g := testgateway.Start(t, nil, testgateway.Options{})
	env := l.env
	producer := func(t *testing.T, servers, queue string, n, size int) {
		t.Helper()
		argv := append(append([]string{}, l.producer...), servers, queue, strconv.Itoa(n), strconv.Itoa(size))
		stored(t, mustRun(t, 60*time.Second, env, argv...).stdout, n)
	}
	workerArgv := func(servers string, queues []string, max int, idle string) []string {
		return append(append([]string{}, l.worker...), servers, strings.Join(queues, ","), strconv.Itoa(max), idle)
	}

	t.Run("producer_workers_exactly_once", func(t *testing.T) {
		const n = 20
		q := testbroker.Name(t, "jobs")
		producer(t, g.Addr, q, n, 0)
		// Two worker processes compete for the queue until it stays empty.
		a := start(t, 60*time.Second, env, workerArgv(g.Addr, []string{q}, 0, "1")...)
		b := start(t, 60*time.Second, env, workerArgv(g.Addr, []string{q}, 0, "1")...)
		ra, rb := a.wait(t), b.wait(t)
		for _, r := range []result{ra, rb} {
			if r.code != 0 {
				t.Fatalf("worker exit %d\nstdout:\n%s\nstderr:\n%s", r.code, clip(r.stdout), clip(r.stderr))
			}
		}
		ja, _ := jobs(t, ra.stdout)
		jb, _ := jobs(t, rb.stdout)
		exactlyOnce(t, append(ja, jb...), n, 1, 0)
		drained(t, q)
	})

	t.Run("serialized_values_and_flags_round_trip", func(t *testing.T) {
		small, big := testbroker.Name(t, "small"), testbroker.Name(t, "big")
		producer(t, g.Addr, small, 1, 0)
		producer(t, g.Addr, big, 1, l.bigSize)
		if flags, _ := inspect(t, small); flags != l.flags {
			t.Errorf("x-mc-flags of a job = %d, want %d", flags, l.flags)
		}
		flags, raw := inspect(t, big)
		if flags != l.bigFlags {
			t.Errorf("x-mc-flags of a %d-byte job = %d, want %d", l.bigSize, flags, l.bigFlags)
		}
		if compressed := len(raw) < l.bigSize/10; compressed != l.shrinks {
			t.Errorf("big job is %d bytes in the broker: compressed=%v, want %v", len(raw), compressed, l.shrinks)
		}
		for _, c := range []struct {
			q    string
			size int
		}{{small, 0}, {big, l.bigSize}} {
			r := mustRun(t, 30*time.Second, env, workerArgv(g.Addr, []string{c.q}, 1, "5")...)
			got, _ := jobs(t, r.stdout)
			exactlyOnce(t, got, 1, 1, c.size)
		}
		drained(t, small, big)
	})

	t.Run("multi_get", func(t *testing.T) {
		const n = 3
		qs := []string{testbroker.Name(t, "m1"), testbroker.Name(t, "m2"), testbroker.Name(t, "m3")}
		for _, q := range qs {
			producer(t, g.Addr, q, n, 0)
		}
		r := mustRun(t, 30*time.Second, env, workerArgv(g.Addr, qs, n*len(qs), "3")...)
		got, _ := jobs(t, r.stdout)
		exactlyOnce(t, got, n, len(qs), 0)
		drained(t, qs...)
	})

	t.Run("worker_dies_holding_a_job", func(t *testing.T) {
		const n = 3
		q := testbroker.Name(t, "crash")
		producer(t, g.Addr, q, n, 0)
		before := g.Metric("mcbridge_redelivered_total")
		r := run(t, 30*time.Second, env, l.crashArgs(workerArgv(g.Addr, []string{q}, 0, "5"))...)
		got, held := jobs(t, r.stdout)
		if r.code == 0 || held == nil || len(got) != 0 {
			t.Fatalf("crashing worker: exit %d, held %v, consumed %v\n%s", r.code, held, got, r.stderr)
		}
		r = mustRun(t, 30*time.Second, env, workerArgv(g.Addr, []string{q}, n, "5")...)
		got, _ = jobs(t, r.stdout)
		exactlyOnce(t, got, n, 1, 0) // including the job the first worker held
		// The dead worker's jobs came back (a worker process with several
		// threads held several).
		if d := g.Metric("mcbridge_redelivered_total") - before; d < 1 || d > n {
			t.Errorf("redeliveries = %v, want 1..%d (the jobs the dead worker held)", d, n)
		}
		drained(t, q)
	})

	t.Run("two_gateways_in_the_server_list", func(t *testing.T) {
		const n = 5
		g2 := testgateway.Start(t, nil, testgateway.Options{})
		servers := g.Addr + "," + g2.Addr
		qs := []string{testbroker.Name(t, "s1"), testbroker.Name(t, "s2"), testbroker.Name(t, "s3"), testbroker.Name(t, "s4")}
		for _, q := range qs {
			producer(t, servers, q, n, 0)
		}
		a := start(t, 60*time.Second, env, workerArgv(servers, qs, 0, "1.5")...)
		b := start(t, 60*time.Second, env, workerArgv(servers, qs, 0, "1.5")...)
		ra, rb := a.wait(t), b.wait(t)
		ja, _ := jobs(t, ra.stdout)
		jb, _ := jobs(t, rb.stdout)
		exactlyOnce(t, append(ja, jb...), n, len(qs), 0)
		drained(t, qs...)
		// Which gateway served what depends on how the client hashed the
		// (random) queue names; both are usually used.
		t.Logf("commands served: gateway 1 %v, gateway 2 %v",
			g.Metric("mcbridge_commands_total"), g2.Metric("mcbridge_commands_total"))
	})

	t.Run("set_fails_when_the_confirm_times_out", func(t *testing.T) {
		// A confirm slower than amqp.confirm_timeout answers SERVER_ERROR:
		// each client must report a failed set, never "stored".
		cfg := testgateway.Config()
		cfg.AMQP.ConfirmTimeout = time.Microsecond
		slow := testgateway.Start(t, cfg, testgateway.Options{})
		q := testbroker.Name(t, "slow")
		argv := append(append([]string{}, l.producer...), slow.Addr, q, "1", "0")
		r := run(t, 30*time.Second, env, argv...)
		if r.code == 0 || strings.Contains(r.stdout, "stored") {
			t.Errorf("producer against a confirm timeout: exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, clip(r.stderr))
		}
	})

	if l.probe != nil {
		t.Run("client_defaults_delete_miss_and_timeouts", func(t *testing.T) {
			q := testbroker.Name(t, "probe")
			host, port := hostPort(g.Addr)
			r := mustRun(t, 30*time.Second, env, append(append([]string{}, l.probe...), host, port, q)...)
			for _, want := range l.probeWant {
				if !regexp.MustCompile(want).MatchString(r.stdout) {
					t.Errorf("client behaviour: want a line matching %s\ngot:\n%s\nstderr:\n%s", want, r.stdout, clip(r.stderr))
				}
			}
		})
	}
}
