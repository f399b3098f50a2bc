package amqp

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"
)

// ErrBrokerTimeout: the broker did not answer a call within the RPC
// timeout (a frozen or overloaded broker). The call's outcome is unknown;
// what it fetched or opened later is given back or closed.
var ErrBrokerTimeout = errors.New("amqp: broker did not answer in time")

// errNotStarted: bounded ran nothing because the client is closed.
var errNotStarted = fmt.Errorf("%w (call not started)", ErrClosed)

// bounded runs call, one or more broker RPCs, and waits for it at most
// RPCTimeout. amqp091-go's RPCs cannot be cancelled: one that a frozen broker
// never answers ends only when heartbeats declare the connection dead,
// long after every client gave up. A call that outlives the wait goes on in
// a goroutine of the client's, and when it finally ends, late is called
// with its error: on success it undoes what the call did (closes the
// channel it opened, gives back the message it fetched), since nobody
// waits for it any more.
func (c *Client) bounded(call func() error, late func(error)) error {
	const (
		waiting int32 = iota
		done
		abandoned
	)
	var state atomic.Int32
	var err error
	finished := make(chan struct{})
	if !c.goFetch(func() {
		e := call()
		if !state.CompareAndSwap(waiting, done) {
			if late != nil {
				late(e)
			}
			return
		}
		err = e
		close(finished)
	}) {
		return errNotStarted
	}
	t := time.NewTimer(c.opts.RPCTimeout)
	defer t.Stop()
	select {
	case <-finished:
		return err
	case <-t.C:
	}
	if state.CompareAndSwap(waiting, abandoned) {
		return ErrBrokerTimeout
	}
	<-finished // it finished just now
	return err
}

// rpc runs call on qc, which the caller has locked, through bounded, and
// unlocks qc once call is over (at once when it never ran).
func (qc *queueChannel) rpc(c *Client, call func() error, late func(error)) error {
	err := c.bounded(func() error {
		defer qc.mu.Unlock()
		return call()
	}, late)
	if err == errNotStarted {
		qc.mu.Unlock()
	}
	return err
}
