package rabbitnode

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// ErrNotInstalled is returned (wrapped, with what to do) when RabbitMQ's
// scripts or Erlang are missing.
var ErrNotInstalled = errors.New("rabbitmq-server is not installed")

// packageScriptDir is where the Debian, Ubuntu and RPM packages keep
// RabbitMQ's own scripts. Their /usr/sbin ones are wrappers that su to the
// rabbitmq user, whose home (and so the Erlang cookie) they impose: the
// nodes here run the scripts themselves, with a home and cookie of their
// own.
var packageScriptDir = "/usr/lib/rabbitmq/bin"

// scripts are the RabbitMQ programs a host runs.
type scripts struct {
	server      string // rabbitmq-server
	ctl         string // rabbitmqctl
	diagnostics string // rabbitmq-diagnostics
}

// findScripts locates RabbitMQ's scripts: the package's own directory
// first, then PATH (a generic-unix install, Homebrew).
func findScripts() (scripts, error) {
	find := func(name string) (string, error) {
		p := filepath.Join(packageScriptDir, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
		p, err := exec.LookPath(name)
		if err != nil {
			return "", fmt.Errorf("%w: %s not found in %s or PATH\n\n%s", ErrNotInstalled, name, packageScriptDir, HowToInstall())
		}
		return p, nil
	}
	var s scripts
	var err error
	if s.server, err = find("rabbitmq-server"); err != nil {
		return s, err
	}
	if s.ctl, err = find("rabbitmqctl"); err != nil {
		return s, err
	}
	if s.diagnostics, err = find("rabbitmq-diagnostics"); err != nil {
		return s, err
	}
	// The start script runs erl from PATH.
	if _, err := exec.LookPath("erl"); err != nil {
		return s, fmt.Errorf("%w: erl (Erlang) not found in PATH\n\n%s", ErrNotInstalled, HowToInstall())
	}
	return s, nil
}

// HowToInstall says what to do on this machine to get rabbitmq-server.
func HowToInstall() string {
	const what = "The tests start private RabbitMQ nodes of their own (they never use or start the\n" +
		"machine's default broker on port 5672) and need RabbitMQ installed: rabbitmq-server,\n" +
		"rabbitmqctl and rabbitmq-diagnostics, with Erlang.\n"
	_, aptErr := exec.LookPath("apt-get")
	switch {
	case aptErr == nil && os.Geteuid() == 0:
		return what + "Install it with:\n    make test                          (installs what the tests need, then runs them)\nor: apt-get install rabbitmq-server"
	case aptErr == nil:
		return what + "Install it as root:\n    sudo apt-get install rabbitmq-server\nor run the whole suite as root: sudo make test"
	default:
		return what + "This is not a Debian or Ubuntu machine: install RabbitMQ 3.10 or later with its\n" +
			"Erlang from your system's packages or from https://www.rabbitmq.com/docs/download,\n" +
			"so that rabbitmq-server, rabbitmqctl and rabbitmq-diagnostics are on PATH."
	}
}
