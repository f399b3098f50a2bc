package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mcbridge/mcbridge/amqp"
	"github.com/mcbridge/mcbridge/bridge"
	"github.com/mcbridge/mcbridge/config"
	"github.com/mcbridge/mcbridge/internal/tlsconf"
)

// shutdownGrace is how long a graceful stop waits for commands in hand
// (a set waiting for its confirm) before closing connections hard.
const shutdownGrace = 10 * time.Second

// boundAddrs are the addresses mcbridge serves on, as bound: a port 0 in
// the config has become a free port.
type boundAddrs struct {
	listen  net.Addr
	metrics net.Addr // nil when metrics_listen is ""
}

// run is mcbridge: it parses args, then serves until ctx ends. serving, if
// not nil, is called once it serves, with the bound addresses (tests listen
// on port 0 and learn the ports here).
func run(ctx context.Context, args []string, stdout, stderr io.Writer, serving func(boundAddrs)) error {
	fs := flag.NewFlagSet("mcbridge", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configFile := fs.String("config", "", "YAML config `file` (default: built-in defaults)")
	showVersion := fs.Bool("version", false, "print the version and exit")
	checkConfig := fs.Bool("check-config", false, "validate the config file and exit")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if *showVersion {
		fmt.Fprintln(stdout, "mcbridge", bridge.Version)
		return nil
	}

	cfg := config.Default()
	if *configFile != "" {
		var err error
		if cfg, err = config.LoadFile(*configFile); err != nil {
			return err
		}
	}
	if *checkConfig {
		if *configFile == "" {
			return errors.New("-check-config needs -config FILE")
		}
		fmt.Fprintf(stdout, "%s: OK\n", *configFile)
		return nil
	}

	log, err := newLogger(stderr, *logLevel, *logFormat)
	if err != nil {
		return err
	}
	return serve(ctx, cfg, log, serving)
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("-log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("-log-format %q: want text or json", format)
}

func serve(ctx context.Context, cfg *config.Config, log *slog.Logger, serving func(boundAddrs)) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewBuildInfoCollector(),
	)
	obs := bridge.NewObserver(reg)

	brokerTLS, err := tlsconf.Client(cfg.AMQP.TLS)
	if err != nil {
		return err
	}
	urls := make([]string, len(cfg.AMQP.URLs))
	for i, u := range cfg.AMQP.URLs {
		urls[i] = u.Raw()
	}
	broker := amqp.New(amqp.Options{
		URLs:               urls,
		ConnectionName:     cfg.AMQP.ConnectionName,
		ConsumeConnections: cfg.AMQP.ConsumeConnections,
		ConfirmTimeout:     cfg.AMQP.ConfirmTimeout,
		Heartbeat:          heartbeat(cfg.AMQP.Heartbeat),
		TLS:                brokerTLS,
		Topology:           bridge.Topology(cfg),
		Observer:           obs,
		Logger:             log.With("component", "amqp"),
	})
	// Start waits for one attempt per connection (each walks the URLs
	// with a bounded dial); a signal meanwhile stops it.
	if err := broker.Start(ctx); err != nil {
		if ctx.Err() != nil {
			log.Info("stopped before serving")
			return nil
		}
		return fmt.Errorf("start: %w", err)
	}
	defer broker.Close()
	if err := broker.Ready(); err != nil {
		log.Warn("broker not reachable yet; serving SERVER_ERROR until it is", "err", err)
	}

	srv := bridge.New(cfg, broker, obs, bridge.Options{Logger: log})
	ln, err := srv.Listen()
	if err != nil {
		return err
	}
	if cfg.TLS.Enabled() {
		tc, err := tlsconf.Server(cfg.TLS)
		if err != nil {
			ln.Close()
			return err
		}
		ln = tls.NewListener(ln, tc)
	}

	bound := boundAddrs{listen: ln.Addr()}
	var metricsSrv *http.Server
	metricsAddr := "disabled"
	if cfg.MetricsListen != "" {
		mln, err := net.Listen("tcp", cfg.MetricsListen)
		if err != nil {
			ln.Close()
			return fmt.Errorf("listen on metrics_listen %s: %w", cfg.MetricsListen, err)
		}
		bound.metrics = mln.Addr()
		metricsAddr = mln.Addr().String()
		metricsSrv = &http.Server{Handler: httpHandler(reg, broker), ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := metricsSrv.Serve(mln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("metrics server stopped", "err", err)
			}
		}()
	}

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	// The addresses logged are the bound ones (port 0 picks a free port).
	log.Info("mcbridge serving", "listen", ln.Addr().String(), "metrics", metricsAddr, "version", bridge.Version)
	if serving != nil {
		serving(bound)
	}

	select {
	case <-ctx.Done():
		log.Info("shutting down; a second signal stops at once", "grace", shutdownGrace)
	case err := <-serveErr:
		// Serve only returns early on a listener failure.
		shutdown(srv, metricsSrv)
		return err
	}
	shutdown(srv, metricsSrv)
	<-serveErr
	log.Info("stopped")
	return nil
}

// heartbeat maps the config's 0, which takes the broker's proposal
// (RabbitMQ: 60s) and does not disable heartbeats (amqp091-go cannot), to
// the amqp package's spelling of that: a negative value (its 0 means 10s).
func heartbeat(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

func shutdown(srv *bridge.Server, metricsSrv *http.Server) {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	_ = srv.Shutdown(ctx)
	if metricsSrv != nil {
		_ = metricsSrv.Shutdown(ctx)
	}
}

// readiness says why the gateway cannot serve yet (nil: ready); the broker
// client's Ready.
type readiness interface{ Ready() error }

// httpHandler serves /metrics, /healthz (200 while the process serves) and
// /readyz (200 only while every broker connection is up and the topology
// declared, else 503 with the reason).
func httpHandler(reg *prometheus.Registry, broker readiness) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := broker.Ready(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	return mux
}
