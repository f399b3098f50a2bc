package faults

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/mcbridge/mcbridge/bridge"
	"github.com/mcbridge/mcbridge/config"
	"github.com/mcbridge/mcbridge/internal/mctest"
	"github.com/mcbridge/mcbridge/internal/testbroker"
	"github.com/mcbridge/mcbridge/internal/testgateway"
	"github.com/mcbridge/mcbridge/internal/tlsconf"
)

// TestTLSSilentClients: a gateway with TLS on the memcache port, full at
// max_connections, then a flood of TCP clients that never start the
// handshake. The accept loop never waits on them: once a slot frees, a real
// TLS client is served at once; the silent clients that were refused are
// cut within a second, and a silent client that got a slot loses it after
// the handshake deadline (read_timeout), freeing it for a real client.
func TestTLSSilentClients(t *testing.T) {
	const (
		maxConns    = 3
		silent      = 100 // over the refusals written at once (64): the rest are closed unanswered
		readTimeout = 2 * time.Second
	)
	ca := newCA(t)
	ca.issue(t, "server", false)
	cfg := testgateway.Config()
	cfg.Limits.MaxConnections = maxConns
	cfg.Limits.ReadTimeout = readTimeout
	cfg.TLS = config.ServerTLS{CertFile: ca.path("server.pem"), KeyFile: ca.path("server-key.pem")}
	serverConf, err := tlsconf.Server(cfg.TLS)
	if err != nil {
		t.Fatal(err)
	}
	g := testgateway.Start(t, cfg, testgateway.Options{ListenTLS: serverConf})
	clientConf := &tls.Config{RootCAs: ca.pool(), ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
	dialTLS := func(within time.Duration) (*mctest.Client, error) {
		d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: within}, Config: clientConf}
		ctx, cancel := context.WithTimeout(context.Background(), within)
		defer cancel()
		nc, err := d.DialContext(ctx, "tcp", g.Addr)
		if err != nil {
			return nil, err
		}
		t.Cleanup(func() { nc.Close() })
		return mctest.New(t, nc), nil
	}
	served := func(c *mctest.Client) {
		t.Helper()
		c.Do("version\r\n", "VERSION "+bridge.Version+"\r\n")
	}
	connections := func(n float64) func() bool {
		return func() bool { return g.Metric("mcbridge_connections") == n }
	}

	// Full.
	var real []*mctest.Client
	for range maxConns {
		c, err := dialTLS(5 * time.Second)
		if err != nil {
			t.Fatalf("TLS dial: %v", err)
		}
		served(c)
		real = append(real, c)
	}

	// The flood: TCP connections that never send a byte.
	floodStart := time.Now()
	raws := make([]net.Conn, 0, silent)
	for range silent {
		nc, err := net.DialTimeout("tcp", g.Addr, 5*time.Second)
		if err != nil {
			t.Fatalf("raw dial: %v", err)
		}
		t.Cleanup(func() { nc.Close() })
		raws = append(raws, nc)
	}
	testbroker.Eventually(t, 10*time.Second, "every silent client to be refused", func() bool {
		return g.Metric("mcbridge_limit_refusals_total", "limit", "max_connections") == silent
	})

	// A slot frees: a new TLS client is served within a bound.
	real[0].Close()
	testbroker.Eventually(t, 10*time.Second, "the freed slot", connections(maxConns-1))
	start := time.Now()
	c, err := dialTLS(5 * time.Second)
	if err != nil {
		t.Fatalf("TLS client after a slot freed, behind %d silent clients: %v", silent, err)
	}
	served(c)
	t.Logf("figure: a TLS client served %v after a slot freed, behind %d silent clients", time.Since(start).Round(time.Millisecond), silent)

	// Every refused silent client was cut: EOF, or a reset, within the
	// refusal timeout (the reply itself cannot be written, since the
	// handshake never happens).
	var wg sync.WaitGroup
	cut := make([]time.Duration, len(raws))
	for i, nc := range raws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, err := io.Copy(io.Discard, nc)
			if err != nil && !mctest.IsReset(err) {
				t.Errorf("silent client %d: %v, want EOF", i, err)
			}
			cut[i] = time.Since(floodStart)
		}()
	}
	wg.Wait()
	var longest time.Duration
	for _, d := range cut {
		longest = max(longest, d)
	}
	if longest > 5*time.Second {
		t.Errorf("the last refused silent client was cut after %v, want about 1s", longest)
	}
	t.Logf("figure: %d refused silent clients all cut within %v of the flood", silent, longest.Round(time.Millisecond))

	// A silent client that gets a slot holds it only until the handshake
	// deadline.
	real[1].Close()
	testbroker.Eventually(t, 10*time.Second, "the freed slot", connections(maxConns-1))
	holder, err := net.DialTimeout("tcp", g.Addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { holder.Close() })
	held := time.Now()
	testbroker.Eventually(t, 10*time.Second, "the silent client to take the slot", connections(maxConns))
	_ = holder.SetReadDeadline(time.Now().Add(4 * readTimeout))
	if _, err := io.Copy(io.Discard, holder); err != nil && !mctest.IsReset(err) {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("a silent client kept its slot for %v (read_timeout %v)", time.Since(held), readTimeout)
		}
		t.Fatalf("silent slot holder: %v", err)
	}
	d := time.Since(held)
	if d < readTimeout/2 {
		t.Errorf("the silent slot holder was cut after %v, before the handshake deadline %v", d, readTimeout)
	}
	t.Logf("figure: a silent client holding a slot was cut after %v (read_timeout %v)", d.Round(time.Millisecond), readTimeout)
	testbroker.Eventually(t, 10*time.Second, "the slot to free", connections(maxConns-1))
	c2, err := dialTLS(5 * time.Second)
	if err != nil {
		t.Fatalf("TLS client after the silent holder was cut: %v", err)
	}
	served(c2)
	served(real[2])
}
