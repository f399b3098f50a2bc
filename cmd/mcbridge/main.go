// Command mcbridge is a memcache-protocol queue gateway in front of
// RabbitMQ: memcache clients set, get and delete; RabbitMQ keeps the
// messages.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// The first signal starts a graceful stop; giving the signals their
	// default action back makes a second one end the process at once.
	context.AfterFunc(ctx, stop)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr, nil)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "mcbridge:", err)
		os.Exit(1)
	}
}
