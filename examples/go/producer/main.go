// Command producer enqueues jobs on an mcbridge queue with gomemcache.
//
//	go run ./examples/go/producer SERVERS QUEUE COUNT [BODY_BYTES]
//
// SERVERS is host:port[,host:port...].
package main

import (
	"encoding/json"
	"fmt"
	"log"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
)

// Job is what the producer enqueues, as JSON.
type Job struct {
	ID   int    `json:"id"`
	Body string `json:"body"`
}

func main() {
	if len(os.Args) < 4 {
		log.Fatal("usage: producer SERVERS QUEUE COUNT [BODY_BYTES]")
	}
	queue := os.Args[2]
	count, _ := strconv.Atoi(os.Args[3])
	bodyBytes := 0
	if len(os.Args) > 4 {
		bodyBytes, _ = strconv.Atoi(os.Args[4])
	}

	mc := memcache.New(strings.Split(os.Args[1], ",")...)
	// Set returns after RabbitMQ confirmed the message: the default Timeout
	// (500ms) is too short for a slow confirm; keep it above mcbridge's
	// amqp.confirm_timeout (5s).
	mc.Timeout = 6 * time.Second

	for i := 1; i <= count; i++ {
		value, _ := json.Marshal(Job{ID: i, Body: fmt.Sprintf("payload %d ", i) + strings.Repeat("x", bodyBytes)})
		// Flags are yours: mcbridge keeps them in the AMQP header x-mc-flags.
		if err := mc.Set(&memcache.Item{Key: queue, Value: value}); err != nil {
			log.Fatalf("set %s: %v", queue, err) // ErrNotStored, or a server error
		}
		fmt.Println("stored", i)
	}
}
