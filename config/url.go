package config

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
)

// URL is an AMQP URL that may hold a password. Every way of printing it
// (String, %v, %#v, JSON or YAML via MarshalText) redacts the password as
// net/url.URL.Redacted does, so logs, `stats settings` and error messages
// never leak it; only Raw, meant for dialing, returns it.
type URL string

// Raw returns the URL with its password, for dialing.
func (u URL) Raw() string { return string(u) }

// String returns the redacted URL.
func (u URL) String() string { return u.Redacted() }

// GoString keeps %#v from bypassing the redaction.
func (u URL) GoString() string { return "config.URL(" + strconv.Quote(u.Redacted()) + ")" }

// MarshalText keeps config dumps (JSON, YAML) from carrying the password.
func (u URL) MarshalText() ([]byte, error) { return []byte(u.Redacted()), nil }

// Redacted returns the URL with any password replaced by "xxxxx".
func (u URL) Redacted() string {
	s := string(u)
	pu, err := url.Parse(s)
	if err != nil || pu.Opaque != "" {
		// Not a hierarchical URL: net/url cannot say where the password is
		// (e.g. "guest:secret@host" parses as scheme "guest"), so guess
		// conservatively from the last '@'.
		return redactRaw(s)
	}
	return pu.Redacted()
}

func redactRaw(s string) string {
	at := strings.LastIndexByte(s, '@')
	if at < 0 {
		return s
	}
	start := 0
	if i := strings.Index(s, "://"); i >= 0 && i < at {
		start = i + len("://")
	}
	user, _, hasPassword := strings.Cut(s[start:at], ":")
	if !hasPassword {
		return s
	}
	return s[:start] + user + ":xxxxx" + s[at:]
}

// checkURL returns the rule a URL breaks, phrased without the URL itself so
// that the caller can print the redacted form.
func checkURL(s string) string {
	pu, err := url.Parse(s)
	if err != nil {
		if ue, ok := err.(*url.Error); ok {
			err = ue.Err // url.Error repeats the URL, password included
		}
		return "is not a valid URL: " + err.Error()
	}
	if pu.Scheme != "amqp" && pu.Scheme != "amqps" {
		if pu.Scheme == "" {
			return "has no scheme; want amqp:// or amqps://"
		}
		return fmt.Sprintf("has scheme %q; want amqp or amqps", pu.Scheme)
	}
	if pu.Opaque != "" {
		return "is not of the form " + pu.Scheme + "://user:password@host:port/vhost"
	}
	if port := pu.Port(); port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return fmt.Sprintf("has port %q; want 1-65535", port)
		}
	}
	if pu.Fragment != "" {
		return "has a #fragment; a vhost named with # must be written %23"
	}
	return ""
}
