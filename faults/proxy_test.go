package faults

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// proxy is an in-process TCP proxy between the gateway and RabbitMQ that a
// test drives to inject network faults: cut every connection (RST-like
// close, new ones refused until Resume), stall them (bytes stop flowing both
// ways without a close, as a network partition does), or drop publisher
// confirms (basic.ack frames) on the publishing connection.
type proxy struct {
	t        testing.TB
	ln       net.Listener
	upstream string
	// pubName is the AMQP connection name of the gateway's publishing
	// connection, found in the client's start-ok frame.
	pubName []byte

	dropAcks atomic.Int32 // basic.ack frames still to drop on the publish link
	accepted atomic.Int64

	mu      sync.Mutex
	cond    *sync.Cond     // on mu: stalled changed
	links   map[*link]bool // guarded by mu
	cut     bool           // guarded by mu: refuse new connections
	stalled bool           // guarded by mu: no byte flows
	closed  bool           // guarded by mu
	wg      sync.WaitGroup // accept loop and links
}

type link struct {
	client, server net.Conn
	publish        atomic.Bool // the client named itself as the publish connection
}

// startProxy listens on 127.0.0.1 and forwards to upstream. With tc set it
// terminates TLS (amqps:// from the gateway, plain AMQP to the broker).
func startProxy(t testing.TB, upstream string, pubName string, tc *tls.Config) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy listen: %v", err)
	}
	if tc != nil {
		ln = tls.NewListener(ln, tc)
	}
	p := &proxy{t: t, ln: ln, upstream: upstream, pubName: []byte(pubName), links: make(map[*link]bool)}
	p.cond = sync.NewCond(&p.mu)
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.accepted.Add(1)
		p.mu.Lock()
		if p.cut || p.closed {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.mu.Unlock()
		s, err := net.DialTimeout("tcp", p.upstream, 5*time.Second)
		if err != nil {
			c.Close()
			continue
		}
		l := &link{client: c, server: s}
		p.mu.Lock()
		if p.cut || p.closed {
			p.mu.Unlock()
			c.Close()
			s.Close()
			continue
		}
		p.links[l] = true
		p.wg.Add(2)
		p.mu.Unlock()
		go p.pipe(l, true)
		go p.pipe(l, false)
	}
}

// pipe copies one direction of a link; up is gateway → broker.
func (p *proxy) pipe(l *link, up bool) {
	defer p.wg.Done()
	src, dst := l.server, l.client
	if up {
		src, dst = l.client, l.server
	}
	defer func() {
		l.client.Close()
		l.server.Close()
		p.mu.Lock()
		delete(p.links, l)
		p.mu.Unlock()
	}()
	var sniff []byte // gateway → broker: the start of the stream, to name the link
	var frames frameFilter
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			chunk := buf[:n]
			if up && len(sniff) < 8<<10 && !l.publish.Load() {
				sniff = append(sniff, chunk...)
				if bytes.Contains(sniff, p.pubName) {
					l.publish.Store(true)
				}
			}
			if !up {
				// Frames are tracked from the first byte, so that a drop
				// asked for mid-stream still cuts at frame boundaries.
				chunk = frames.filter(chunk, func(frame []byte) bool {
					return l.publish.Load() && p.dropAck(frame)
				})
				if len(chunk) == 0 {
					if err != nil {
						return
					}
					continue
				}
			}
			if !p.waitFlowing() {
				return
			}
			if _, werr := dst.Write(chunk); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// dropAck says whether to drop this broker → gateway frame.
func (p *proxy) dropAck(frame []byte) bool {
	// type 1 (method), payload = class-id, method-id; basic.ack = 60/80.
	if frame[0] != 1 || len(frame) < 11 {
		return false
	}
	if binary.BigEndian.Uint16(frame[7:9]) == 60 && binary.BigEndian.Uint16(frame[9:11]) == 80 {
		for {
			n := p.dropAcks.Load()
			if n <= 0 {
				return false
			}
			if p.dropAcks.CompareAndSwap(n, n-1) {
				return true
			}
		}
	}
	return false
}

// waitFlowing blocks while the proxy is stalled; false once the link must
// end.
func (p *proxy) waitFlowing() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.stalled && !p.closed && !p.cut {
		p.cond.Wait()
	}
	return !p.closed && !p.cut
}

// Cut closes every connection and refuses new ones until Resume.
func (p *proxy) Cut() {
	p.mu.Lock()
	p.cut = true
	p.stalled = false
	p.cond.Broadcast()
	for l := range p.links {
		l.client.Close()
		l.server.Close()
	}
	p.mu.Unlock()
}

// Stall stops every byte on every connection, old and new, without closing
// anything: a network partition.
func (p *proxy) Stall() {
	p.mu.Lock()
	p.stalled = true
	p.mu.Unlock()
}

// Resume lets bytes and new connections through again.
func (p *proxy) Resume() {
	p.mu.Lock()
	p.cut = false
	p.stalled = false
	p.cond.Broadcast()
	p.mu.Unlock()
}

// DropConfirms drops the next n basic.ack frames the broker sends on the
// publishing connection: confirms that never come.
func (p *proxy) DropConfirms(n int32) { p.dropAcks.Add(n) }

func (p *proxy) linkCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.links)
}

func (p *proxy) close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	p.cond.Broadcast()
	for l := range p.links {
		l.client.Close()
		l.server.Close()
	}
	p.mu.Unlock()
	p.ln.Close()
	p.wg.Wait()
}

// frameFilter reassembles AMQP frames from a byte stream (broker → client,
// which has no protocol header) so that whole frames can be dropped.
type frameFilter struct{ pending []byte }

func (f *frameFilter) filter(chunk []byte, drop func(frame []byte) bool) []byte {
	f.pending = append(f.pending, chunk...)
	var out []byte
	for len(f.pending) >= 7 {
		size := int(binary.BigEndian.Uint32(f.pending[3:7]))
		total := 7 + size + 1
		if len(f.pending) < total {
			break
		}
		frame := f.pending[:total]
		if !drop(frame) {
			out = append(out, frame...)
		}
		f.pending = f.pending[total:]
	}
	f.pending = append([]byte(nil), f.pending...)
	return out
}
