package config

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// URL is an AMQP URL that may hold a password. Every way of printing it
// (String, %v, %#v, JSON or YAML via MarshalText) redacts the password, so
// logs, `stats settings` and error messages never leak it; only Raw, meant
// for dialing, returns it.
type URL string

// Raw returns the URL with its password, for dialing.
func (u URL) Raw() string { return string(u) }

// String returns the redacted URL.
func (u URL) String() string { return u.Redacted() }

// GoString keeps %#v from bypassing the redaction.
func (u URL) GoString() string { return "config.URL(" + strconv.Quote(u.Redacted()) + ")" }

// MarshalText keeps config dumps (JSON, YAML) from carrying the password.
func (u URL) MarshalText() ([]byte, error) { return []byte(u.Redacted()), nil }

// Redacted returns the URL with any password replaced by "xxxxx", as
// net/url.URL.Redacted does for a well-formed URL.
func (u URL) Redacted() string { return redact(string(u)) }

// UnmarshalYAML accepts amqp:// and amqps:// URLs.
func (u *URL) UnmarshalYAML(n *yaml.Node) error {
	s, err := scalar(n)
	if err != nil {
		return err
	}
	if rule := checkURL(s); rule != "" {
		return &ruleError{rule}
	}
	*u = URL(s)
	return nil
}

// redact masks whatever may be a password in s: the text between the first
// ':' of the user part and the last '@'. It works on text, not on a parsed
// URL, because the URLs that most need it do not parse (a password with an
// unescaped '/' or '@'), or are not in amqp.urls at all (a URL pasted under
// the wrong key). It may mask more than the password, never less.
func redact(s string) string {
	at := strings.LastIndexByte(s, '@')
	if at < 0 {
		return s
	}
	start := 0 // the user part starts after the scheme, if s starts with one
	if i := strings.Index(s, "://"); i >= 0 && i < at && strings.IndexByte(s, ':') == i {
		start = i + len("://")
	}
	user, _, hasPassword := strings.Cut(s[start:at], ":")
	if !hasPassword {
		return s
	}
	return s[:start] + user + ":xxxxx" + s[at:]
}

// quote is %q for text from a config file. Every value or key that an error
// message repeats goes through it, so that a password is masked wherever
// the operator put it.
func quote(s string) string { return strconv.Quote(redact(s)) }

// checkURL returns the rule a URL breaks, phrased without the URL itself so
// that the caller can print the redacted form.
func checkURL(s string) string {
	pu, err := url.Parse(s)
	if err != nil {
		// net/url quotes the part it choked on, which can be a piece of
		// the password: explain from the redacted URL instead.
		if _, rerr := url.Parse(redact(s)); rerr != nil {
			var ue *url.Error
			if errors.As(rerr, &ue) {
				rerr = ue.Err // url.Error repeats the URL
			}
			return "is not a valid URL: " + rerr.Error()
		}
		return "is not a valid URL: " + encodePassword
	}
	if pu.Scheme != "amqp" && pu.Scheme != "amqps" {
		if pu.Scheme == "" {
			return "has no scheme; want amqp:// or amqps://"
		}
		return fmt.Sprintf("has scheme %s; want amqp or amqps", quote(pu.Scheme))
	}
	if pu.Opaque != "" {
		return "is not of the form " + pu.Scheme + "://user:password@host:port/vhost"
	}
	if _, rest, ok := strings.Cut(s, "://"); ok {
		if i := strings.IndexAny(rest, "/?#"); i >= 0 && strings.ContainsRune(rest[i:], '@') {
			// The password ended early at a '/', '?' or '#': the rest of
			// it, and the real host, would be read as the vhost.
			return "has an @ after the host: " + encodePassword
		}
	}
	if port := pu.Port(); port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return fmt.Sprintf("has port %s; want 1-65535", quote(port))
		}
	}
	if pu.Fragment != "" {
		return "has a #fragment; a vhost named with # must be written %23"
	}
	return ""
}

const encodePassword = "percent-encode / ? # @ : in the user name and password (%2F %3F %23 %40 %3A)"
