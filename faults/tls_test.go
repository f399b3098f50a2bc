package faults

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/mcbridge/mcbridge/config"
	"github.com/mcbridge/mcbridge/internal/mctest"
	"github.com/mcbridge/mcbridge/internal/testbroker"
	"github.com/mcbridge/mcbridge/internal/testgateway"
	"github.com/mcbridge/mcbridge/internal/tlsconf"
)

// testCA is a throwaway certificate authority made for one test; its keys
// live in the test's temp dir only.
type testCA struct {
	cert   *x509.Certificate
	key    *ecdsa.PrivateKey
	dir    string
	serial int64
}

func newCA(t testing.TB) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "mcbridge test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ca := &testCA{cert: cert, key: key, dir: t.TempDir(), serial: 1}
	writePEM(t, ca.path("ca.pem"), "CERTIFICATE", der)
	return ca
}

func (ca *testCA) path(name string) string { return filepath.Join(ca.dir, name) }

func (ca *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// issue makes a certificate for 127.0.0.1 (server) or a client, writes
// name.pem and name-key.pem, and returns it loaded.
func (ca *testCA) issue(t testing.TB, name string, client bool) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ca.serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(ca.serial),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
	}
	if client {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		tmpl.IPAddresses, tmpl.DNSNames = nil, nil
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, ca.path(name+".pem"), "CERTIFICATE", der)
	writePEM(t, ca.path(name+"-key.pem"), "EC PRIVATE KEY", kder)
	cert, err := tls.LoadX509KeyPair(ca.path(name+".pem"), ca.path(name+"-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TLS on the memcache port, wired as cmd/mcbridge does (tlsconf.Server from
// the tls section, client_ca_file required): a crypto/tls client with a
// client certificate and gomemcache over TLS both set, reserve and ack; a
// client without a certificate is refused and the port keeps serving.
func TestTLSMemcachePort(t *testing.T) {
	g, ca, dialer := startMutualTLS(t, testgateway.Config())
	q := testbroker.Name(t, "q")

	// crypto/tls and the raw text protocol.
	c := dialTLS(t, dialer, g.Addr)
	expect(t, "set over TLS", "STORED")(c.Set(q, "over tls"))
	wantHit(t, c, q, "over tls")
	expect(t, "delete over TLS", "DELETED")(c.Delete(q))

	// gomemcache, through its DialContext hook.
	mcc := memcache.New(g.Addr)
	mcc.Timeout = 5 * time.Second
	mcc.DialContext = dialer.DialContext
	if err := mcc.Set(&memcache.Item{Key: q, Value: []byte("gomemcache"), Flags: 42}); err != nil {
		t.Fatalf("gomemcache Set over TLS: %v", err)
	}
	it, err := mcc.Get(q)
	if err != nil || string(it.Value) != "gomemcache" || it.Flags != 42 {
		t.Fatalf("gomemcache Get over TLS: %+v %v", it, err)
	}
	if err := mcc.Delete(q); err != nil {
		t.Fatalf("gomemcache Delete over TLS: %v", err)
	}
	mcc.Close()

	// No client certificate: the handshake fails.
	refusedWithoutCertificate(t, ca, g.Addr, "version\r\n")
	if n := testbroker.QueueDepth(t, q); n != 0 {
		t.Errorf("%s holds %d messages; all were acked", q, n)
	}
	expect(t, "still serving", "STORED")(c.Set(q, "after"))
	wantHit(t, c, q, "after")
	expect(t, "delete", "DELETED")(c.Delete(q))
}

// amqps:// through a TLS-terminating proxy in front of the broker, with the
// amqp.tls options (ca_file): the gateway serves, survives a cut of the TLS
// connections, and refuses a broker whose certificate it cannot verify.
func TestAMQPS(t *testing.T) {
	ca := newCA(t)
	serverCert := ca.issue(t, "broker", false)
	p := startProxy(t, testbroker.Addr, "", &tls.Config{Certificates: []tls.Certificate{serverCert}, MinVersion: tls.VersionTLS12})
	brokerConf, err := tlsconf.Client(config.ClientTLS{CAFile: ca.path("ca.pem")})
	if err != nil {
		t.Fatal(err)
	}
	url := "amqps://guest:guest@" + p.addr() + "/"
	g := testgateway.Start(t, nil, testgateway.Options{URLs: []string{url}, BrokerTLS: brokerConf})
	g.WaitReady(10 * time.Second)
	q := testbroker.Name(t, "q")
	c := mctest.MustDialConn(t, g.Addr)
	expect(t, "set via amqps", "STORED")(c.Set(q, "tls1"))
	wantHit(t, c, q, "tls1")
	expect(t, "delete via amqps", "DELETED")(c.Delete(q))
	if n := p.linkCount(); n < 2 {
		t.Errorf("%d TLS connections through the proxy, want publish and consume", n)
	}

	p.Cut()
	testbroker.Eventually(t, 5*time.Second, "the gateway to notice", func() bool { return g.Broker.Ready() != nil })
	p.Resume()
	t.Logf("amqps ready %v after the cut ended", g.WaitReady(15*time.Second).Round(time.Millisecond))
	expect(t, "set after the cut", "STORED")(c.Set(q, "tls2"))
	// The ack of tls1 was written just before the cut and may never have
	// reached the broker: then tls1 comes back, a duplicate after a fault.
	got := mctest.Drain(t, c, q)
	if got["tls2"] != 1 || got["tls1"] > 1 || len(got) > 2 {
		t.Errorf("after the cut %s held %v, want tls2 (and at most tls1 again)", q, got)
	}

	// A CA that did not sign the proxy's certificate: never ready, and
	// the reason says why.
	other := newCA(t)
	badConf, err := tlsconf.Client(config.ClientTLS{CAFile: other.path("ca.pem")})
	if err != nil {
		t.Fatal(err)
	}
	bad := testgateway.Start(t, nil, testgateway.Options{URLs: []string{url}, BrokerTLS: badConf})
	if err := bad.Broker.Ready(); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("gateway with an untrusted broker certificate: Ready = %v, want a certificate error", err)
	}
	bc := mctest.MustDialConn(t, bad.Addr)
	if r, err := bc.Set(q, "x"); err != nil || !strings.HasPrefix(r, "SERVER_ERROR ") {
		t.Errorf("set with an untrusted broker: %q %v", r, err)
	}
}

// Client certificates and broker logins combine: behind mTLS a client
// still logs in as a broker user before any queue command, and a client
// without a certificate never reaches the login.
func TestTLSWithBrokerLogin(t *testing.T) {
	cfg := testgateway.Config()
	cfg.Auth.Mode = config.AuthBroker
	g, ca, dialer := startMutualTLS(t, cfg)
	q := testbroker.Name(t, "q")
	c := dialTLS(t, dialer, g.Addr)

	expect(t, "get before the login", "CLIENT_ERROR unauthenticated")(c.RoundTrip("get " + q + "\r\n"))
	expect(t, "wrong password", "CLIENT_ERROR authentication failure")(c.Set("auth", "guest wrong"))
	expect(t, "login", "STORED")(c.Set("auth", "guest guest"))
	expect(t, "set after the login", "STORED")(c.Set(q, "behind mtls"))
	wantHit(t, c, q, "behind mtls")
	expect(t, "delete", "DELETED")(c.Delete(q))

	refusedWithoutCertificate(t, ca, g.Addr, "set auth 0 0 11\r\nguest guest\r\n")
}

// startMutualTLS starts a gateway with cfg serving TLS on the memcache
// port, client certificates required, wired as cmd/mcbridge does
// (tlsconf.Server from the tls section). It returns the gateway, its CA,
// and a dialer that presents a client certificate.
func startMutualTLS(t *testing.T, cfg *config.Config) (*testgateway.Gateway, *testCA, *tls.Dialer) {
	t.Helper()
	ca := newCA(t)
	ca.issue(t, "server", false)
	clientCert := ca.issue(t, "client", true)
	cfg.TLS = config.ServerTLS{CertFile: ca.path("server.pem"), KeyFile: ca.path("server-key.pem"), ClientCAFile: ca.path("ca.pem")}
	serverConf, err := tlsconf.Server(cfg.TLS)
	if err != nil {
		t.Fatal(err)
	}
	g := testgateway.Start(t, cfg, testgateway.Options{ListenTLS: serverConf})
	dialer := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second},
		Config: &tls.Config{RootCAs: ca.pool(), Certificates: []tls.Certificate{clientCert}, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}}
	return g, ca, dialer
}

// dialTLS opens a memcache connection to addr with dialer, closed when
// the test ends.
func dialTLS(t *testing.T, dialer *tls.Dialer, addr string) *mctest.Conn {
	t.Helper()
	nc, err := dialer.DialContext(context.Background(), "tcp", addr)
	if err != nil {
		t.Fatalf("TLS dial: %v", err)
	}
	c := mctest.NewConn(nc)
	t.Cleanup(c.Close)
	return c
}

// refusedWithoutCertificate checks that a TLS client without a client
// certificate gets no answer to request from the gateway at addr.
func refusedWithoutCertificate(t *testing.T, ca *testCA, addr, request string) {
	t.Helper()
	anon := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: &tls.Config{RootCAs: ca.pool(), ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}}
	ac, err := anon.DialContext(context.Background(), "tcp", addr)
	if err != nil {
		return // refused in the handshake (TLS 1.2)
	}
	defer ac.Close()
	// TLS 1.3 reports the refusal on the first read.
	_ = ac.SetDeadline(time.Now().Add(5 * time.Second))
	_, _ = ac.Write([]byte(request))
	buf := make([]byte, 64)
	if n, err := ac.Read(buf); err == nil {
		t.Errorf("a client without a certificate was answered: %q", buf[:n])
	}
}
