package amqp

import (
	"testing"
	"time"

	"github.com/mcbridge/mcbridge/internal/testbroker"
)

// The janitor locks fetchers while it holds the client's fetcher map
// (releaseIdleFetchers), and a get starts its fetcher's pump while it holds
// the fetcher's lock (ensurePumpLocked). Starting a goroutine must not need
// the map, or the two wait for each other for ever, and every later get
// with them (each looks its fetcher up in the map).
func TestPumpStartsWhileJanitorWalksFetchers(t *testing.T) {
	c := New(Options{URLs: []string{testbroker.URL}})
	defer c.Close()
	f := c.fetcher(testbroker.Name(t, "lockorder"))

	f.mu.Lock() // a get, about to start the pump
	walking := make(chan struct{})
	janitorDone := make(chan struct{})
	go func() {
		defer close(janitorDone)
		c.fmu.Lock() // the janitor, walking the fetchers
		close(walking)
		f.releaseIfIdle(time.Now()) // waits for the get's lock
		c.fmu.Unlock()
	}()
	<-walking
	started := make(chan struct{})
	go func() {
		defer close(started)
		f.ensurePumpLocked()
	}()
	select {
	case <-started:
	case <-time.After(5 * time.Second):
		// Let go, so that the test can end.
		f.mu.Unlock()
		<-janitorDone
		<-started
		t.Fatal("the pump does not start while the janitor holds the fetcher map: deadlock")
	}
	f.mu.Unlock()
	<-janitorDone
}
