package amqp

import (
	"net/url"
	"testing"

	amqp091 "github.com/rabbitmq/amqp091-go"
)

// ForUser keeps every URL's host and options and replaces the user,
// password and vhost, escaped so that amqp091-go reads them back exactly.
func TestForUserURLs(t *testing.T) {
	base := New(Options{URLs: []string{"amqp://guest:guest@node1:5672/%2F?heartbeat=5", "amqps://admin:x@node2:5671/prod"}})
	for _, tc := range []struct{ user, password, vhost string }{
		{"bob", "s3cret", "/"},
		{"a@b:c", "p w/?#@:%", "team/a b"},
	} {
		c, err := base.ForUser(tc.user, tc.password, tc.vhost, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		if !c.opts.StrictStart || len(c.opts.Topology.Queues)+len(c.opts.Topology.Exchanges) != 0 {
			t.Errorf("ForUser: strict %v, topology %+v", c.opts.StrictStart, c.opts.Topology)
		}
		for i, raw := range c.opts.URLs {
			uri, err := amqp091.ParseURI(raw)
			if err != nil {
				t.Fatalf("%d: %v", i, err)
			}
			if uri.Username != tc.user || uri.Password != tc.password || uri.Vhost != tc.vhost {
				t.Errorf("%d: user %q password %q vhost %q, want %q %q %q", i, uri.Username, uri.Password, uri.Vhost, tc.user, tc.password, tc.vhost)
			}
			orig, _ := url.Parse(base.opts.URLs[i])
			got, _ := url.Parse(raw)
			if got.Scheme != orig.Scheme || got.Host != orig.Host || got.RawQuery != orig.RawQuery {
				t.Errorf("%d: %s, want the host and options of %s", i, redact(raw), redact(base.opts.URLs[i]))
			}
		}
	}
}

// Which broker refusals of a connection are a refused login.
func TestLoginRefused(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{amqp091.ErrCredentials, true},
		{amqp091.ErrVhost, true},
		{&amqp091.Error{Code: amqp091.AccessRefused, Reason: "ACCESS_REFUSED - Login was refused", Server: true}, true},
		{&amqp091.Error{Code: amqp091.NotAllowed, Reason: "NOT_ALLOWED - access to vhost 'x' refused for user 'u'", Server: true}, true},
		{&amqp091.Error{Code: amqp091.NotAllowed, Reason: "NOT_ALLOWED - vhost x not found", Server: true}, true},
		{&amqp091.Error{Code: amqp091.NotAllowed, Reason: "NOT_ALLOWED - connection limit (1) is reached for vhost 'x'", Server: true}, false},
		{amqp091.ErrClosed, false},
	} {
		if got := loginRefused(tc.err); got != tc.want {
			t.Errorf("%v: %v, want %v", tc.err, got, tc.want)
		}
	}
}
