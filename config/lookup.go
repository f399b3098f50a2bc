package config

import "strings"

// index makes name lookups O(1) on the per-command path. Default and Load
// build it once; a Config is read-only after that, so readers need no lock,
// and a Config whose Queues or Exchanges were changed afterwards answers
// from the index it was built with. Code that needs other queues builds its
// Config from YAML.
type index struct {
	queues    map[string]int // name → position in Config.Queues; the first one wins
	exchanges map[string]int // name → position in Config.Exchanges
}

func (c *Config) buildIndex() {
	c.idx = index{
		queues:    make(map[string]int, len(c.Queues)),
		exchanges: make(map[string]int, len(c.Exchanges)),
	}
	for i, q := range c.Queues {
		if _, dup := c.idx.queues[q.Name]; !dup {
			c.idx.queues[q.Name] = i
		}
	}
	for i, x := range c.Exchanges {
		if _, dup := c.idx.exchanges[x.Name]; !dup {
			c.idx.exchanges[x.Name] = i
		}
	}
}

// Queue returns the queue declared in the YAML under that name. Auto-declared
// queues are not listed: they take their settings from c.Defaults.
func (c *Config) Queue(name string) (*Queue, bool) {
	i, ok := c.idx.queues[name]
	if !ok {
		return nil, false
	}
	return &c.Queues[i], true
}

// Exchange returns the exchange declared in the YAML under that name.
func (c *Config) Exchange(name string) (*Exchange, bool) {
	i, ok := c.idx.exchanges[name]
	if !ok {
		return nil, false
	}
	return &c.Exchanges[i], true
}

// ExchangeFor returns the exchange a `set` of key publishes to: the first one,
// in YAML order, with a key pattern that matches. Order decides because
// operators write specific routes before catch-alls, as in a router table.
func (c *Config) ExchangeFor(key string) (*Exchange, bool) {
	for i := range c.Exchanges {
		for j := range c.Exchanges[i].Keys {
			if c.Exchanges[i].Keys[j].Match(key) {
				return &c.Exchanges[i], true
			}
		}
	}
	return nil, false
}

// AutoDeclarable reports whether key may create a durable queue of that name
// on first use. A key that an exchange's keys match is never auto-declared:
// every set of it goes to the exchange, so nothing would ever reach the queue.
// Names that RabbitMQ reserves or rejects (empty, "amq." prefix, longer than a
// memcache key) are never auto-declarable, whatever the patterns say.
func (c *Config) AutoDeclarable(key string) bool {
	if !c.AutoDeclare.Enabled || key == "" || len(key) > MaxQueueNameLength || strings.HasPrefix(key, reservedPrefix) {
		return false
	}
	matched := false
	for i := range c.AutoDeclare.Keys {
		if c.AutoDeclare.Keys[i].Match(key) {
			matched = true
			break
		}
	}
	if !matched {
		return false
	}
	_, routed := c.ExchangeFor(key)
	return !routed
}
