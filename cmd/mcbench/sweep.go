package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
)

// publishSweep measures raw publish+confirm with the same messages spread
// over channels in different ways: what a gateway can change (how many
// channels carry 16 publishes in flight) against what it cannot (how many
// are in flight: one per synchronous client, since STORED waits for the
// confirm). Each layout runs twice, interleaved, on a queue of its own.
func publishSweep(o options, out io.Writer) error {
	layouts := []struct{ channels, inflight int }{
		{o.clients, 1}, {2, o.clients / 2}, {1, o.clients},
		{1, 2 * o.clients}, {1, 4 * o.clients}, {1, 8 * o.clients},
	}
	rates := make([][]float64, len(layouts))
	for range 2 {
		for i, l := range layouts {
			r, err := pipelinedPublish(o, l.channels, l.inflight)
			if err != nil {
				return fmt.Errorf("publish %d channels × %d in flight: %w", l.channels, l.inflight, err)
			}
			rates[i] = append(rates[i], r)
		}
	}
	fmt.Fprintf(out, "raw publish+confirm, %d messages of %d bytes, persistent\n", o.messages, o.size)
	fmt.Fprintf(out, "%-10s %-20s %-12s %s\n", "channels", "in flight each", "in flight", "msg/s (two runs)")
	for i, l := range layouts {
		fmt.Fprintf(out, "%-10d %-20d %-12d %.0f, %.0f\n", l.channels, l.inflight, l.channels*l.inflight, rates[i][0], rates[i][1])
	}
	return nil
}

// pipelinedPublish publishes o.messages over channels, each keeping up to
// inflight unconfirmed, and returns the rate.
func pipelinedPublish(o options, channels, inflight int) (float64, error) {
	conn, admin, queue, cleanup, err := scratchQueue(o.url, "sweep")
	if err != nil {
		return 0, err
	}
	defer cleanup()

	chans := make([]*amqp091.Channel, channels)
	for i := range chans {
		if chans[i], err = conn.Channel(); err != nil {
			return 0, err
		}
		if err := chans[i].Confirm(false); err != nil {
			return 0, err
		}
	}
	per := o.messages / channels
	errs := make(chan error, channels)
	var wg sync.WaitGroup
	start := time.Now()
	for c, ch := range chans {
		wg.Add(1)
		go func() {
			defer wg.Done()
			window := make(chan *amqp091.DeferredConfirmation, inflight)
			wait := func() bool { return (<-window).Wait() }
			for i := range per {
				if len(window) == inflight && !wait() {
					errs <- fmt.Errorf("nacked")
					return
				}
				dc, err := ch.PublishWithDeferredConfirm("", queue, true, false, amqp091.Publishing{
					DeliveryMode: amqp091.Persistent, Body: body(c*per+i, o.size),
				})
				if err != nil {
					errs <- err
					return
				}
				window <- dc
			}
			for len(window) > 0 {
				if !wait() {
					errs <- fmt.Errorf("nacked")
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	select {
	case err := <-errs:
		return 0, err
	default:
	}
	q, err := admin.QueueDeclarePassive(queue, true, false, false, false, nil)
	if err != nil {
		return 0, err
	}
	if q.Messages != per*channels {
		return 0, fmt.Errorf("%d messages confirmed, %d in the queue", per*channels, q.Messages)
	}
	return float64(per*channels) / elapsed.Seconds(), nil
}

// ackSweep measures one raw consumer (prefetch 128) acking every message
// alone against acking every k with one basic.ack(multiple): what the
// gateway's ack writer gains by coalescing the acks of many clients.
func ackSweep(o options, out io.Writer) error {
	batches := []int{1, 4, 16}
	rates := make([][]float64, len(batches))
	for range 2 {
		for i, k := range batches {
			r, err := consumeAckingEvery(o, k)
			if err != nil {
				return fmt.Errorf("consume acking every %d: %w", k, err)
			}
			rates[i] = append(rates[i], r)
		}
	}
	fmt.Fprintf(out, "raw consume (one consumer, prefetch 128), %d messages of %d bytes, persistent\n", o.messages, o.size)
	fmt.Fprintf(out, "%-28s %s\n", "acks", "msg/s (two runs)")
	for i, k := range batches {
		what := "each alone"
		if k > 1 {
			what = fmt.Sprintf("every %d, multiple", k)
		}
		fmt.Fprintf(out, "%-28s %.0f, %.0f\n", what, rates[i][0], rates[i][1])
	}
	return nil
}

// consumeAckingEvery fills a queue of its own, then consumes it, acking
// every k-th delivery with multiple (and the last), and returns the rate
// of the consumption.
func consumeAckingEvery(o options, k int) (float64, error) {
	conn, ch, queue, cleanup, err := scratchQueue(o.url, "acks")
	if err != nil {
		return 0, err
	}
	defer cleanup()
	if err := ch.Confirm(false); err != nil {
		return 0, err
	}
	var last *amqp091.DeferredConfirmation
	for i := range o.messages {
		if last, err = ch.PublishWithDeferredConfirm("", queue, false, false, amqp091.Publishing{
			DeliveryMode: amqp091.Persistent, Body: body(i, o.size),
		}); err != nil {
			return 0, err
		}
	}
	if !last.Wait() {
		return 0, fmt.Errorf("nacked")
	}
	cch, err := conn.Channel()
	if err != nil {
		return 0, err
	}
	if err := cch.Qos(128, 0, false); err != nil {
		return 0, err
	}
	deliveries, err := cch.Consume(queue, "", false, false, false, false, nil)
	if err != nil {
		return 0, err
	}
	seen := newTally(o.messages)
	start := time.Now()
	for i := 1; i <= o.messages; i++ {
		d, ok := <-deliveries
		if !ok {
			return 0, fmt.Errorf("consumer closed after %d deliveries", i-1)
		}
		seen.add(index(d.Body))
		if i%k == 0 || i == o.messages {
			if err := d.Ack(k > 1); err != nil {
				return 0, err
			}
		}
	}
	elapsed := time.Since(start)
	if lost, dup := seen.check(); lost != 0 || dup != 0 {
		return 0, fmt.Errorf("%d lost, %d duplicated", lost, dup)
	}
	return float64(o.messages) / elapsed.Seconds(), nil
}

// scratchQueue connects and declares a durable classic queue of its own;
// cleanup deletes the queue and closes the connection.
func scratchQueue(url, hint string) (conn *amqp091.Connection, ch *amqp091.Channel, queue string, cleanup func(), err error) {
	conn, err = amqp091.Dial(url)
	if err != nil {
		return nil, nil, "", nil, err
	}
	if ch, err = conn.Channel(); err != nil {
		conn.Close()
		return nil, nil, "", nil, err
	}
	queue = fmt.Sprintf("mcbench.%s.%d.%d", hint, os.Getpid(), time.Now().UnixNano())
	if _, err := ch.QueueDeclare(queue, true, false, false, false, nil); err != nil {
		conn.Close()
		return nil, nil, "", nil, err
	}
	return conn, ch, queue, func() {
		_, _ = ch.QueueDelete(queue, false, false, false)
		conn.Close()
	}, nil
}
