package config

import "strings"

// index makes name lookups O(1) on the per-command path. It remembers which
// slices it was built from: when a caller has since replaced or grown them
// (as tests of other packages do), lookups fall back to a scan instead of
// answering from a stale index. Nothing is written after Load, so readers
// need no lock.
type index struct {
	queues    map[string]int
	queuesOf  *Queue
	queuesLen int

	exchanges    map[string]int
	exchangesOf  *Exchange
	exchangesLen int
}

func (c *Config) buildIndex() {
	x := &index{
		queues:       make(map[string]int, len(c.Queues)),
		queuesOf:     first(c.Queues),
		queuesLen:    len(c.Queues),
		exchanges:    make(map[string]int, len(c.Exchanges)),
		exchangesOf:  first(c.Exchanges),
		exchangesLen: len(c.Exchanges),
	}
	for i := range c.Queues {
		if _, dup := x.queues[c.Queues[i].Name]; !dup {
			x.queues[c.Queues[i].Name] = i
		}
	}
	for i := range c.Exchanges {
		if _, dup := x.exchanges[c.Exchanges[i].Name]; !dup {
			x.exchanges[c.Exchanges[i].Name] = i
		}
	}
	c.idx = x
}

func first[T any](s []T) *T {
	if len(s) == 0 {
		return nil
	}
	return &s[0]
}

// Queue returns the queue declared in the YAML under that name. Auto-declared
// queues are not listed: they take their settings from c.Defaults.
func (c *Config) Queue(name string) (*Queue, bool) {
	if x := c.idx; x != nil && x.queuesOf == first(c.Queues) && x.queuesLen == len(c.Queues) {
		if i, ok := x.queues[name]; ok && c.Queues[i].Name == name {
			return &c.Queues[i], true
		} else if !ok {
			return nil, false
		}
	}
	for i := range c.Queues {
		if c.Queues[i].Name == name {
			return &c.Queues[i], true
		}
	}
	return nil, false
}

// Exchange returns the exchange declared in the YAML under that name.
func (c *Config) Exchange(name string) (*Exchange, bool) {
	if x := c.idx; x != nil && x.exchangesOf == first(c.Exchanges) && x.exchangesLen == len(c.Exchanges) {
		if i, ok := x.exchanges[name]; ok && c.Exchanges[i].Name == name {
			return &c.Exchanges[i], true
		} else if !ok {
			return nil, false
		}
	}
	for i := range c.Exchanges {
		if c.Exchanges[i].Name == name {
			return &c.Exchanges[i], true
		}
	}
	return nil, false
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
