package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// The decoder walks the yaml.Node tree itself instead of unmarshalling into
// tagged structs: that is what lets every error carry the line, the YAML path
// and the rule in the operator's words, tell an absent key from an explicit
// one, and accept sizes like "1MiB".

type decoder struct {
	cfg *Config

	// Lines of settings whose checks need the whole file (queues may bind
	// to exchanges declared further down, `defaults` may come last).
	lines     map[string]int
	exchanges []exchangeMeta
	queues    []queueMeta
}

type exchangeMeta struct {
	where string
	keys  []int // line of each key
}

type queueMeta struct {
	where         string
	line          int
	typeLine      int
	deliveryLimit int // line
	bindings      []bindingMeta
}

type bindingMeta struct {
	where      string
	label      string // bindings[i]
	line       int
	exchange   int // line
	routingKey int // line; 0 when left out
}

// field is one key of a YAML mapping and how to decode its value.
type field struct {
	key    string
	decode func(*yaml.Node) error
}

func errAt(n *yaml.Node, format string, args ...any) error {
	return &Error{Line: n.Line, Msg: fmt.Sprintf(format, args...)}
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// syntaxError turns the YAML library's "yaml: line 3: ..." into an *Error so
// that LoadFile can print it as "file:3: ...".
func syntaxError(err error) error {
	msg := err.Error()
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &Error{Line: line, Msg: "invalid YAML: " + m[2]}
	}
	return &Error{Msg: "invalid YAML: " + strings.TrimPrefix(msg, "yaml: ")}
}

func (d *decoder) decode(data []byte) error {
	d.lines = map[string]int{}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // empty file: all defaults
		}
		return syntaxError(err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return errAt(&extra, "a second YAML document starts here; mcbridge reads one")
	} else if !errors.Is(err, io.EOF) {
		return syntaxError(err)
	}
	root := &doc
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			return nil
		}
		root = root.Content[0]
	}
	return d.top(root)
}

func (d *decoder) top(n *yaml.Node) error {
	c := d.cfg
	return d.mapping(n, "", []field{
		{"listen", func(v *yaml.Node) error { return d.address(v, "listen", &c.Listen, false) }},
		{"metrics_listen", func(v *yaml.Node) error { return d.address(v, "metrics_listen", &c.MetricsListen, true) }},
		{"amqp", d.amqp},
		{"tls", func(v *yaml.Node) error {
			t := &c.TLS
			return d.mapping(v, "tls", []field{
				{"cert_file", d.str("tls.cert_file", &t.CertFile)},
				{"key_file", d.str("tls.key_file", &t.KeyFile)},
				{"client_ca_file", d.str("tls.client_ca_file", &t.ClientCAFile)},
			})
		}},
		{"limits", d.limits},
		{"defaults", func(v *yaml.Node) error {
			df := &c.Defaults
			return d.mapping(v, "defaults", []field{
				{"reservation_timeout", d.reservationTimeout("defaults.reservation_timeout", &df.ReservationTimeout)},
				{"queue_type", d.enum("defaults.queue_type", (*string)(&df.QueueType), queueTypes)},
				{"ack", d.enum("defaults.ack", (*string)(&df.Ack), ackModes)},
			})
		}},
		{"auto_declare", func(v *yaml.Node) error {
			a := &c.AutoDeclare
			return d.mapping(v, "auto_declare", []field{
				{"enabled", d.boolean("auto_declare.enabled", &a.Enabled)},
				{"keys", d.keyPatterns("auto_declare.keys", &a.Keys, nil)},
			})
		}},
		{"exchanges", d.exchangeList},
		{"queues", d.queueList},
	})
}

func (d *decoder) amqp(n *yaml.Node) error {
	a := &d.cfg.AMQP
	return d.mapping(n, "amqp", []field{
		{"urls", d.urls},
		{"connection_name", d.str("amqp.connection_name", &a.ConnectionName)},
		{"consume_connections", d.integer("amqp.consume_connections", &a.ConsumeConnections, 1)},
		{"confirm_timeout", d.duration("amqp.confirm_timeout", &a.ConfirmTimeout, func(v time.Duration) string {
			if v <= 0 {
				return "must be greater than 0"
			}
			return ""
		})},
		{"heartbeat", d.duration("amqp.heartbeat", &a.Heartbeat, func(v time.Duration) string {
			switch {
			case v < 0:
				return "must not be negative (0 disables heartbeats)"
			case v%time.Second != 0:
				return "must be whole seconds: AMQP negotiates heartbeats in seconds"
			case v > math.MaxUint16*time.Second:
				return fmt.Sprintf("is above AMQP's maximum of %v", math.MaxUint16*time.Second)
			}
			return ""
		})},
		{"tls", func(v *yaml.Node) error {
			t := &a.TLS
			return d.mapping(v, "amqp.tls", []field{
				{"ca_file", d.str("amqp.tls.ca_file", &t.CAFile)},
				{"cert_file", d.str("amqp.tls.cert_file", &t.CertFile)},
				{"key_file", d.str("amqp.tls.key_file", &t.KeyFile)},
				{"server_name", d.str("amqp.tls.server_name", &t.ServerName)},
			})
		}},
	})
}

func (d *decoder) urls(n *yaml.Node) error {
	var urls []URL
	seen := map[string]int{}
	err := d.sequence(n, "amqp.urls", func(i int, item *yaml.Node) error {
		name := fmt.Sprintf("amqp.urls[%d]", i)
		s, err := scalar(item, name)
		if err != nil {
			return err
		}
		u := URL(s)
		if rule := checkURL(s); rule != "" {
			return errAt(item, "%s %q %s", name, u.Redacted(), rule)
		}
		if line, dup := seen[s]; dup {
			return errAt(item, "%s %q is listed twice (first at line %d)", name, u.Redacted(), line)
		}
		seen[s] = item.Line
		urls = append(urls, u)
		return nil
	})
	if err != nil {
		return err
	}
	if len(urls) == 0 {
		return errAt(n, "amqp.urls must list at least one broker URL (remove the key for the default %s)", URL(DefaultAMQPURL))
	}
	d.cfg.AMQP.URLs = urls
	d.lines["amqp.urls"] = n.Line
	return nil
}

func (d *decoder) limits(n *yaml.Node) error {
	l := &d.cfg.Limits
	nonNegative := func(v time.Duration) string {
		if v < 0 {
			return "must not be negative (0 means no timeout)"
		}
		return ""
	}
	return d.mapping(n, "limits", []field{
		{"max_connections", d.integer("limits.max_connections", &l.MaxConnections, 1)},
		{"max_item_size", d.size("limits.max_item_size", &l.MaxItemSize)},
		{"idle_timeout", d.duration("limits.idle_timeout", &l.IdleTimeout, nonNegative)},
		{"read_timeout", d.duration("limits.read_timeout", &l.ReadTimeout, nonNegative)},
		{"max_reservations_per_connection", d.integer("limits.max_reservations_per_connection", &l.MaxReservationsPerConnection, 1)},
	})
}

// checkItemName checks the name of item i of a list (exchanges, queues): it
// is there, it passes rule, and no earlier item of the list (prev) has it.
func checkItemName[T any](item, nameNode *yaml.Node, list string, i int, name string, rule func(string) string, prev []T, nameLine func(*T) (string, int)) error {
	bare := listItem(list, i, "")
	if nameNode == nil {
		return errAt(item, "%s: name is required", bare)
	}
	if msg := rule(name); msg != "" {
		return errAt(nameNode, "%s: name %q %s", bare, name, msg)
	}
	for j := range prev {
		if other, line := nameLine(&prev[j]); other == name {
			return errAt(nameNode, "%s: name %q is already used by %s (line %d)", bare, name, listItem(list, j, ""), line)
		}
	}
	return nil
}

func (d *decoder) exchangeList(n *yaml.Node) error {
	d.cfg.Exchanges = nil
	d.exchanges = nil
	return d.sequence(n, "exchanges", func(i int, item *yaml.Node) error {
		item = resolve(item)
		where := listItem("exchanges", i, peekName(item))
		x := Exchange{Line: item.Line}
		meta := exchangeMeta{where: where}
		var nameNode *yaml.Node
		err := d.mapping(item, where, []field{
			{"name", func(v *yaml.Node) error {
				nameNode = v
				return d.str(join(where, "name"), &x.Name)(v)
			}},
			{"type", func(v *yaml.Node) error {
				return d.enum(join(where, "type"), (*string)(&x.Type), exchangeTypes)(v)
			}},
			{"keys", d.keyPatterns(join(where, "keys"), &x.Keys, &meta.keys)},
		})
		if err != nil {
			return err
		}
		if item.Kind != yaml.MappingNode {
			return errAt(item, "%s must be a mapping with name, type and keys", where)
		}
		if err := checkItemName(item, nameNode, "exchanges", i, x.Name, checkExchangeName, d.cfg.Exchanges,
			func(e *Exchange) (string, int) { return e.Name, e.Line }); err != nil {
			return err
		}
		if x.Type == "" {
			return errAt(item, "%s: type is required (fanout, direct or topic)", where)
		}
		if err := d.shadowed(x, meta); err != nil {
			return err
		}
		d.cfg.Exchanges = append(d.cfg.Exchanges, x)
		d.exchanges = append(d.exchanges, meta)
		return nil
	})
}

// shadowed rejects keys that an earlier exchange already takes (first match
// wins), since nothing would ever publish through them. Only cases that are
// certain are caught: the same pattern, an earlier "#", or a literal key that
// an earlier pattern matches.
func (d *decoder) shadowed(x Exchange, meta exchangeMeta) error {
	for k, p := range x.Keys {
		for j, prev := range d.cfg.Exchanges {
			for _, q := range prev.Keys {
				if q.raw == p.raw || q.raw == "#" || (!p.wild && q.Match(p.raw)) {
					return &Error{Line: meta.keys[k], Msg: fmt.Sprintf(
						"%s: key %q is already routed to %s by its key %q (the first exchange that matches wins), so nothing would publish here",
						meta.where, p.raw, listItem("exchanges", j, prev.Name), q.raw)}
				}
			}
		}
		for j := range k {
			if x.Keys[j].raw == p.raw {
				return &Error{Line: meta.keys[k], Msg: fmt.Sprintf("%s: key %q is listed twice", meta.where, p.raw)}
			}
		}
	}
	return nil
}

func (d *decoder) queueList(n *yaml.Node) error {
	d.cfg.Queues = nil
	d.queues = nil
	return d.sequence(n, "queues", func(i int, item *yaml.Node) error {
		item = resolve(item)
		where := listItem("queues", i, peekName(item))
		q := Queue{Line: item.Line}
		meta := queueMeta{where: where, line: item.Line}
		var nameNode *yaml.Node
		err := d.mapping(item, where, []field{
			{"name", func(v *yaml.Node) error {
				nameNode = v
				return d.str(join(where, "name"), &q.Name)(v)
			}},
			{"type", func(v *yaml.Node) error {
				meta.typeLine = v.Line
				return d.enum(join(where, "type"), (*string)(&q.Type), queueTypes)(v)
			}},
			{"bindings", func(v *yaml.Node) error { return d.bindings(v, where, &q, &meta) }},
			{"ack", d.enum(join(where, "ack"), (*string)(&q.Ack), ackModes)},
			{"reservation_timeout", d.reservationTimeout(join(where, "reservation_timeout"), &q.ReservationTimeout)},
			{"max_length", d.integer64(join(where, "max_length"), &q.MaxLength, 0)},
			{"overflow", d.enum(join(where, "overflow"), (*string)(&q.Overflow), overflows)},
			{"message_ttl", d.duration(join(where, "message_ttl"), &q.MessageTTL, func(v time.Duration) string {
				switch {
				case v < 0:
					return "must not be negative (0 means no TTL)"
				case v%time.Millisecond != 0:
					return "must be whole milliseconds: RabbitMQ's x-message-ttl counts milliseconds"
				case v > MaxMessageTTL:
					return fmt.Sprintf("is above RabbitMQ's maximum of %v", MaxMessageTTL)
				}
				return ""
			})},
			{"dead_letter_exchange", func(v *yaml.Node) error {
				if err := d.str(join(where, "dead_letter_exchange"), &q.DeadLetterExchange)(v); err != nil {
					return err
				}
				// amq.* exchanges are fine here: they exist and may be targets.
				if rule := checkName(q.DeadLetterExchange, maxShortString); q.DeadLetterExchange != "" && rule != "" {
					return errAt(v, "%s %q %s", join(where, "dead_letter_exchange"), q.DeadLetterExchange, rule)
				}
				return nil
			}},
			{"delivery_limit", func(v *yaml.Node) error {
				meta.deliveryLimit = v.Line
				return d.integer(join(where, "delivery_limit"), &q.DeliveryLimit, 0)(v)
			}},
		})
		if err != nil {
			return err
		}
		if item.Kind != yaml.MappingNode {
			return errAt(item, "%s must be a mapping with at least a name", where)
		}
		if err := checkItemName(item, nameNode, "queues", i, q.Name, checkQueueName, d.cfg.Queues,
			func(q *Queue) (string, int) { return q.Name, q.Line }); err != nil {
			return err
		}
		d.cfg.Queues = append(d.cfg.Queues, q)
		d.queues = append(d.queues, meta)
		return nil
	})
}

func (d *decoder) bindings(n *yaml.Node, where string, q *Queue, meta *queueMeta) error {
	q.Bindings = nil
	meta.bindings = nil
	return d.sequence(n, join(where, "bindings"), func(i int, item *yaml.Node) error {
		item = resolve(item)
		bw := join(where, fmt.Sprintf("bindings[%d]", i))
		var b Binding
		bm := bindingMeta{where: bw, label: fmt.Sprintf("bindings[%d]", i), line: item.Line}
		err := d.mapping(item, bw, []field{
			{"exchange", func(v *yaml.Node) error {
				bm.exchange = v.Line
				return d.str(join(bw, "exchange"), &b.Exchange)(v)
			}},
			{"routing_key", func(v *yaml.Node) error {
				bm.routingKey = v.Line
				return d.str(join(bw, "routing_key"), &b.RoutingKey)(v)
			}},
		})
		if err != nil {
			return err
		}
		if item.Kind != yaml.MappingNode || bm.exchange == 0 {
			return errAt(item, "%s: exchange is required, e.g. {exchange: orders}", bw)
		}
		q.Bindings = append(q.Bindings, b)
		meta.bindings = append(meta.bindings, bm)
		return nil
	})
}

// mapping decodes a YAML mapping through fields. A null value (a key with
// nothing after it) leaves the defaults in place.
func (d *decoder) mapping(n *yaml.Node, where string, fields []field) error {
	n = resolve(n)
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		if where == "" {
			return errAt(n, "the config must be a mapping of keys to values, got %s", kindName(n))
		}
		return errAt(n, "%s must be a mapping, got %s", where, kindName(n))
	}
	ps, err := pairs(n, where)
	if err != nil {
		return err
	}
	for _, p := range ps {
		f := lookupField(fields, p.key.Value)
		if f == nil {
			in := ""
			if where != "" {
				in = " in " + where
			}
			return errAt(p.key, "unknown key %q%s%s", p.key.Value, in, suggest(p.key.Value, fields))
		}
		if err := f.decode(p.value); err != nil {
			return err
		}
	}
	return nil
}

type pair struct{ key, value *yaml.Node }

// maxMergedKeys bounds what merge keys may expand to, so that a small file
// of nested merges cannot make loading take exponential time.
const maxMergedKeys = 10000

// merging guards the expansion of merge keys against alias cycles and blow-up.
type merging struct {
	open   map[*yaml.Node]bool // mappings being expanded
	budget int
}

// pairs lists a mapping's entries with YAML merge keys ("<<: *anchor")
// expanded, explicit keys winning over merged ones, and rejects a key given
// twice: the YAML library would silently keep the last one.
func pairs(n *yaml.Node, where string) ([]pair, error) {
	return (&merging{open: map[*yaml.Node]bool{}, budget: maxMergedKeys}).pairs(n, where)
}

func (m *merging) pairs(n *yaml.Node, where string) ([]pair, error) {
	m.open[n] = true
	defer delete(m.open, n)
	var explicit, merged []pair
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if m.budget--; m.budget < 0 {
			return nil, errAt(k, "merge keys in %s expand to more than %d keys", orTop(where), maxMergedKeys)
		}
		if k.Kind == yaml.ScalarNode && k.Value == "<<" && k.ShortTag() == "!!merge" {
			v = resolve(v)
			var sources []*yaml.Node
			switch v.Kind {
			case yaml.MappingNode:
				sources = []*yaml.Node{v}
			case yaml.SequenceNode:
				for _, s := range v.Content {
					sources = append(sources, resolve(s))
				}
			}
			if len(sources) == 0 {
				return nil, errAt(k, "merge key << in %s must refer to a mapping", orTop(where))
			}
			for _, s := range sources {
				if s.Kind != yaml.MappingNode {
					return nil, errAt(k, "merge key << in %s must refer to a mapping", orTop(where))
				}
				if m.open[s] {
					return nil, errAt(k, "merge key << in %s merges a mapping into itself", orTop(where))
				}
				ps, err := m.pairs(s, where)
				if err != nil {
					return nil, err
				}
				merged = append(merged, ps...)
			}
			continue
		}
		if k.Kind != yaml.ScalarNode {
			return nil, errAt(k, "keys in %s must be plain words, got %s", orTop(where), kindName(k))
		}
		if line, dup := seen[k.Value]; dup {
			return nil, errAt(k, "key %q is repeated in %s (first at line %d)", k.Value, orTop(where), line)
		}
		seen[k.Value] = k.Line
		explicit = append(explicit, pair{k, v})
	}
	for _, p := range merged {
		if _, dup := seen[p.key.Value]; !dup {
			seen[p.key.Value] = p.key.Line // the first merged source wins, as in YAML
			explicit = append(explicit, p)
		}
	}
	return explicit, nil
}

func orTop(where string) string {
	if where == "" {
		return "the top level"
	}
	return where
}

// sequence decodes a YAML list; null means an empty list.
func (d *decoder) sequence(n *yaml.Node, name string, each func(int, *yaml.Node) error) error {
	n = resolve(n)
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		return errAt(n, "%s must be a list, got %s", name, kindName(n))
	}
	for i, item := range n.Content {
		if err := each(i, item); err != nil {
			return err
		}
	}
	return nil
}

func lookupField(fields []field, key string) *field {
	for i := range fields {
		if fields[i].key == key {
			return &fields[i]
		}
	}
	return nil
}

// suggest names the key the operator probably meant, or lists the keys.
func suggest(key string, fields []field) string {
	best, bestDist := "", 3
	names := make([]string, len(fields))
	for i, f := range fields {
		names[i] = f.key
		if dist := editDistance(key, f.key); dist < bestDist {
			best, bestDist = f.key, dist
		}
	}
	if best != "" {
		return fmt.Sprintf("; did you mean %q?", best)
	}
	return "; known keys: " + strings.Join(names, ", ")
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func resolve(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if isNull(n) {
			return "nothing"
		}
		return fmt.Sprintf("the value %q", n.Value)
	}
	return "something else"
}

// peekName reads a list item's name early so that errors about any of its
// keys can say which queue or exchange they are in.
func peekName(n *yaml.Node) string {
	if n.Kind != yaml.MappingNode {
		return ""
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k, v := n.Content[i], resolve(n.Content[i+1]); k.Value == "name" && v.Kind == yaml.ScalarNode && !isNull(v) {
			return v.Value
		}
	}
	return ""
}

// listItem names a list entry the way errors print it: queues[1] "errors".
func listItem(list string, i int, name string) string {
	if name == "" {
		return fmt.Sprintf("%s[%d]", list, i)
	}
	return fmt.Sprintf("%s[%d] %q", list, i, name)
}

// join appends a key to a path: "limits" + "max_item_size" is
// "limits.max_item_size", while a named list entry gets a colon so the name
// stays readable: `queues[1] "errors": max_length`.
func join(where, key string) string {
	switch {
	case where == "":
		return key
	case strings.HasSuffix(where, `"`):
		return where + ": " + key
	}
	return where + "." + key
}

// scalar returns a single value. A key with nothing after it is an error
// rather than a silent default or zero: the operator wrote the key for a reason.
func scalar(n *yaml.Node, name string) (string, error) {
	n = resolve(n)
	if n.Kind != yaml.ScalarNode {
		return "", errAt(n, "%s must be a single value, got %s", name, kindName(n))
	}
	if isNull(n) {
		return "", errAt(n, "%s has no value; remove the key to use the default", name)
	}
	return n.Value, nil
}

func (d *decoder) str(name string, dst *string) func(*yaml.Node) error {
	return func(n *yaml.Node) error {
		s, err := scalar(n, name)
		if err != nil {
			return err
		}
		*dst = s
		d.lines[name] = n.Line
		return nil
	}
}

func (d *decoder) boolean(name string, dst *bool) func(*yaml.Node) error {
	return func(n *yaml.Node) error {
		s, err := scalar(n, name)
		if err != nil {
			return err
		}
		switch s {
		case "true", "True", "TRUE":
			*dst = true
		case "false", "False", "FALSE":
			*dst = false
		default:
			return errAt(n, "%s %q is not a boolean; want true or false", name, s)
		}
		return nil
	}
}

func (d *decoder) integer(name string, dst *int, least int) func(*yaml.Node) error {
	return func(n *yaml.Node) error {
		var v int64
		if err := d.integer64(name, &v, int64(least))(n); err != nil {
			return err
		}
		if v > math.MaxInt {
			return errAt(n, "%s %d is too large", name, v)
		}
		*dst = int(v)
		return nil
	}
}

func (d *decoder) integer64(name string, dst *int64, least int64) func(*yaml.Node) error {
	return func(n *yaml.Node) error {
		s, err := scalar(n, name)
		if err != nil {
			return err
		}
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			if errors.Is(err, strconv.ErrRange) {
				return errAt(n, "%s %s is too large", name, s)
			}
			return errAt(n, "%s %q is not a whole number", name, s)
		}
		if v < least {
			if least == 0 {
				return errAt(n, "%s %d must not be negative", name, v)
			}
			return errAt(n, "%s %d must be at least %d", name, v, least)
		}
		*dst = v
		return nil
	}
}

// duration parses Go syntax (time.ParseDuration); rule returns what is wrong
// with a parsed value, or "".
func (d *decoder) duration(name string, dst *time.Duration, rule func(time.Duration) string) func(*yaml.Node) error {
	return func(n *yaml.Node) error {
		s, err := scalar(n, name)
		if err != nil {
			return err
		}
		v, err := time.ParseDuration(s)
		if err != nil {
			return errAt(n, "%s %q is not a duration; use Go syntax such as 500ms, 30s, 5m or 1h30m", name, s)
		}
		if msg := rule(v); msg != "" {
			return errAt(n, "%s %s %s", name, s, msg)
		}
		*dst = v
		return nil
	}
}

func (d *decoder) reservationTimeout(name string, dst *time.Duration) func(*yaml.Node) error {
	return d.duration(name, dst, func(v time.Duration) string {
		switch {
		case v <= 0:
			return "must be greater than 0"
		case v >= MaxReservationTimeout:
			return fmt.Sprintf("must be below %v, RabbitMQ's default consumer_timeout: the broker would close the consume channel before the lease ends", MaxReservationTimeout)
		}
		return ""
	})
}

func (d *decoder) size(name string, dst *int64) func(*yaml.Node) error {
	return func(n *yaml.Node) error {
		s, err := scalar(n, name)
		if err != nil {
			return err
		}
		v, msg := parseSize(s)
		if msg != "" {
			return errAt(n, "%s %q %s", name, s, msg)
		}
		switch {
		case v <= 0:
			return errAt(n, "%s %s must be greater than 0", name, s)
		case v > MaxItemSizeLimit:
			return errAt(n, "%s %s is above 128MiB, the largest message RabbitMQ accepts", name, s)
		}
		*dst = v
		return nil
	}
}

var sizeUnits = map[string]int64{"": 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}

// parseSize reads plain bytes or binary units. Decimal units (KB, MB) are
// refused rather than guessed: memcached's -I and RabbitMQ's
// max_message_size are both powers of two, and 1MB vs 1MiB is a real
// difference at the limit.
func parseSize(s string) (int64, string) {
	s = strings.TrimSpace(s)
	i := 0
	if i < len(s) && (s[i] == '-' || s[i] == '+') {
		i++
	}
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	num, unit := s[:i], strings.TrimSpace(s[i:])
	switch {
	case strings.TrimLeft(num, "+-") == "":
		return 0, "is not a size; use bytes (1048576) or KiB, MiB, GiB (1MiB)"
	case strings.HasPrefix(unit, "."):
		return 0, "is not a whole number; write 1536KiB rather than 1.5MiB"
	}
	factor, ok := sizeUnits[unit]
	if !ok {
		return 0, fmt.Sprintf("has unknown unit %q; use bytes or KiB, MiB, GiB (1024-based)", unit)
	}
	v, err := strconv.ParseInt(num, 10, 64)
	if err != nil || v > math.MaxInt64/factor || v < math.MinInt64/factor {
		return 0, "is too large"
	}
	return v * factor, ""
}

var (
	queueTypes    = []string{string(QueueClassic), string(QueueQuorum)}
	ackModes      = []string{string(AckManual), string(AckAuto)}
	exchangeTypes = []string{string(ExchangeFanout), string(ExchangeDirect), string(ExchangeTopic)}
	overflows     = []string{string(OverflowRejectPublish), string(OverflowDropHead)}
)

func (d *decoder) enum(name string, dst *string, allowed []string) func(*yaml.Node) error {
	return func(n *yaml.Node) error {
		s, err := scalar(n, name)
		if err != nil {
			return err
		}
		for _, a := range allowed {
			if s == a {
				*dst = s
				return nil
			}
		}
		return errAt(n, "%s %q is not one of %s", name, s, strings.Join(allowed, ", "))
	}
}

// keyPatterns decodes a list of memcache key patterns; lines, when not nil,
// receives the line of each.
func (d *decoder) keyPatterns(name string, dst *[]Pattern, lines *[]int) func(*yaml.Node) error {
	return func(n *yaml.Node) error {
		ps := []Pattern{}
		var ls []int
		err := d.sequence(n, name, func(i int, item *yaml.Node) error {
			in := fmt.Sprintf("%s[%d]", name, i)
			s, err := scalar(item, in)
			if err != nil {
				return err
			}
			p, rule := parseKeyPattern(s)
			if rule != "" {
				return errAt(item, "%s %q %s", in, s, rule)
			}
			ps = append(ps, p)
			ls = append(ls, resolve(item).Line)
			return nil
		})
		if err != nil {
			return err
		}
		*dst = ps
		if lines != nil {
			*lines = ls
		}
		return nil
	}
}

// parseKeyPattern adds what a pattern over memcache keys needs on top of
// ParsePattern: a pattern no key can match is a mistake, not a no-op.
func parseKeyPattern(s string) (Pattern, string) {
	switch {
	case s == "":
		return Pattern{}, "matches no key: memcache keys are never empty"
	case len(s) > MaxQueueNameLength:
		return Pattern{}, fmt.Sprintf("is %d bytes long; memcache keys are at most %d", len(s), MaxQueueNameLength)
	case strings.ContainsRune(s, '/'):
		return Pattern{}, `contains "/", which ends the queue name in a key (kestrel options follow it), so no key would match`
	}
	if rule := checkChars(s); rule != "" {
		return Pattern{}, rule
	}
	p, rule := parsePattern(s)
	if rule != "" {
		return Pattern{}, "is not a valid pattern: " + rule
	}
	return p, ""
}

// address checks a host:port to listen on. For metrics_listen, "" disables
// the endpoint, and a bare key is refused: it would be ambiguous between the
// default and disabled.
func (d *decoder) address(n *yaml.Node, name string, dst *string, mayDisable bool) error {
	n = resolve(n)
	if mayDisable && isNull(n) {
		return errAt(n, "%s has no value; write %s: \"\" to disable it, or remove the key for the default %s", name, name, DefaultMetricsListen)
	}
	s, err := scalar(n, name)
	if err != nil {
		return err
	}
	if !(mayDisable && s == "") {
		if rule := checkAddress(s); rule != "" {
			return errAt(n, "%s %q %s", name, s, rule)
		}
	}
	*dst = s
	d.lines[name] = n.Line
	return nil
}
