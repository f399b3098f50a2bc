package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/mcbridge/mcbridge/amqp"
	"github.com/mcbridge/mcbridge/bridge"
	"github.com/mcbridge/mcbridge/config"
)

// The gateway runs in a process of its own by default, so that its CPU
// time and resident memory are its own and not mixed with those of a
// thousand benchmark clients: mcbench starts itself again with these
// variables set, and that child serves until its stdin closes.
const (
	childEnv     = "MCBENCH_GATEWAY_CHILD" // the broker URL
	childPubEnv  = "MCBENCH_GATEWAY_PUBLISH_CHANNELS"
	childNameEnv = "MCBENCH_GATEWAY_NAME"
)

// gateway is the gateway under test: its address and, when it is a child
// process, its pid (0 when it runs in this process or elsewhere).
type gateway struct {
	addr string
	pid  int
	stop func()
}

// gatewayChild serves as the child gateway if this process is one; main
// (and the tests' TestMain) call it first.
func gatewayChild() (isChild bool) {
	url := os.Getenv(childEnv)
	if url == "" {
		return false
	}
	pubChans, _ := strconv.Atoi(os.Getenv(childPubEnv))
	stop, addr, err := startGateway(url, pubChans, os.Getenv(childNameEnv))
	if err != nil {
		fmt.Fprintln(os.Stderr, "mcbench gateway:", err)
		os.Exit(1)
	}
	fmt.Println(addr)
	_, _ = io.Copy(io.Discard, os.Stdin) // until the parent closes it or dies
	stop()
	return true
}

// startGatewayProcess starts this program again as a gateway child.
func startGatewayProcess(url string, pubChans int, name string) (*gateway, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), childEnv+"="+url, childPubEnv+"="+strconv.Itoa(pubChans), childNameEnv+"="+name)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the gateway process: %w", err)
	}
	exited := make(chan error, 1)
	addrc := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		addrc <- strings.TrimSpace(line)
		// The child writes nothing more; Wait closes stdout.
		exited <- cmd.Wait()
	}()
	stop := func() {
		stdin.Close()
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}
	select {
	case addr := <-addrc:
		if addr == "" {
			stop()
			return nil, errors.New("the gateway process ended before serving")
		}
		return &gateway{addr: addr, pid: cmd.Process.Pid, stop: stop}, nil
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		stop()
		return nil, errors.New("the gateway process did not serve within 30s")
	}
}

// startGateway runs mcbridge in this process on a free port.
func startGateway(url string, publishChannels int, name string) (stop func(), addr string, err error) {
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.MetricsListen = ""
	log := slog.New(slog.DiscardHandler)
	obs := bridge.NewObserver(nil)
	broker := amqp.New(amqp.Options{URLs: []string{url}, ConnectionName: name, Observer: obs, Logger: log,
		PublishChannels: publishChannels, ConsumeConnections: cfg.AMQP.ConsumeConnections})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := broker.Start(ctx); err != nil {
		return nil, "", err
	}
	if err := broker.Ready(); err != nil {
		broker.Close()
		return nil, "", err
	}
	srv := bridge.New(cfg, broker, obs, bridge.Options{Logger: log})
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		broker.Close()
		return nil, "", err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
		broker.Close()
	}, ln.Addr().String(), nil
}

// memory is the gateway's resident memory now and at its peak; zero when
// the gateway is not a child of this process.
func (g *gateway) memory() (rss, peak int64, err error) {
	if g.pid == 0 {
		return 0, 0, nil
	}
	return procRSS(g.pid)
}
