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
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "mcbridge:", err)
		os.Exit(1)
	}
}
