// Command worker takes jobs from mcbridge queues with gomemcache: Get
// reserves a job, CompareAndSwap acks it once it is done.
//
//	go run ./examples/go/worker [-workers N] [-crash] SERVERS QUEUE[,QUEUE...] [MAX] [IDLE_SECONDS]
//
// gomemcache pools connections, so the connection that acks is not always
// the one that reserved: CompareAndSwap sends the reservation id (the cas
// that Get returned), which mcbridge acks from any connection. A pooled
// connection that gomemcache closes requeues what it reserved, so
// MaxIdleConns must be at least the number of goroutines sharing the client.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
)

// Job is what the producer enqueues, as JSON.
type Job struct {
	ID   int    `json:"id"`
	Body string `json:"body"`
}

func main() {
	workers := flag.Int("workers", 4, "goroutines sharing one client")
	crash := flag.Bool("crash", false, "demo: exit while holding a job")
	flag.Parse()
	if flag.NArg() < 2 {
		log.Fatal("usage: worker [-workers N] [-crash] SERVERS QUEUE[,QUEUE...] [MAX] [IDLE_SECONDS]")
	}
	queues := strings.Split(flag.Arg(1), ",")
	maxJobs, _ := strconv.Atoi(flag.Arg(2)) // 0: no limit
	idle := 5 * time.Second                 // stop after this long without a job
	if s := flag.Arg(3); s != "" {
		secs, _ := strconv.ParseFloat(s, 64)
		idle = time.Duration(secs * float64(time.Second))
	}

	mc := memcache.New(strings.Split(flag.Arg(0), ",")...)
	mc.MaxIdleConns = *workers // fewer idle slots than goroutines would requeue jobs
	mc.Timeout = 6 * time.Second

	var done, lastJob atomic.Int64
	lastJob.Store(time.Now().UnixNano())
	var mu sync.Mutex // one line per job on stdout
	var wg sync.WaitGroup
	for range *workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for maxJobs == 0 || done.Load() < int64(maxJobs) {
				items, err := mc.GetMulti(queues) // one job per queue; gomemcache sends gets
				if err != nil {
					log.Printf("get: %v", err)
				}
				if len(items) == 0 {
					if time.Since(time.Unix(0, lastJob.Load())) > idle {
						return
					}
					time.Sleep(100 * time.Millisecond)
					continue
				}
				for _, it := range items {
					var job Job
					_ = json.Unmarshal(it.Value, &job)
					line, _ := json.Marshal(job)
					mu.Lock()
					if *crash {
						fmt.Printf("crashed holding %s\n", line)
						os.Exit(3)
					}
					fmt.Printf("consumed %s\n", line) // process the job here
					mu.Unlock()
					// Ack by reservation id, from whichever pooled connection.
					if err := mc.CompareAndSwap(it); errors.Is(err, memcache.ErrCacheMiss) {
						log.Printf("ack %s: lease ran out, the job went back to the queue", it.Key)
					} else if err != nil {
						log.Printf("ack %s: %v", it.Key, err)
					}
					done.Add(1)
					lastJob.Store(time.Now().UnixNano())
				}
			}
		}()
	}
	wg.Wait()
}
