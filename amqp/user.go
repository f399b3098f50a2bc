package amqp

import (
	"fmt"
	"net/url"
)

// ForUser returns a new client, not started, that connects to the same
// brokers with the same options as c, but as user with password, in vhost.
// It declares no topology (the YAML topology is c's to declare; the user's
// queues are declared on use, with the user's permissions), starts
// strictly (see Options.StrictStart), and reports to obs.
//
// The password lives in the returned client's URLs, which it needs to
// reconnect, and nowhere else: it is gone with the client.
func (c *Client) ForUser(user, password, vhost, connectionName string, obs Observer) (*Client, error) {
	opts := c.opts
	opts.URLs = make([]string, len(c.opts.URLs))
	for i, raw := range c.opts.URLs {
		u, err := url.Parse(raw)
		if err != nil {
			return nil, fmt.Errorf("amqp url %d: %w", i, err)
		}
		u.User = url.UserPassword(user, password)
		// The AMQP URI's path is the vhost, percent-encoded ("/" is %2F).
		u.Path = "/" + vhost
		u.RawPath = "/" + url.PathEscape(vhost)
		opts.URLs[i] = u.String()
	}
	opts.Topology = Topology{}
	opts.StrictStart = true
	opts.Observer = obs
	if connectionName != "" {
		opts.ConnectionName = connectionName
	}
	return New(opts), nil
}
