package realtime

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	fws "github.com/fasthttp/websocket"
)

// benchFrame is a todo.created frame of the size the app publishes (about 380 bytes).
var benchFrame = []byte(`{"type":"todo.created","seq":1,"todo":{"id":"938a7a06-fe90-401c-84b6-6438912d8ca6",` +
	`"user_id":"NLPE26C4WGK5ZRBV4TQCRXSUD7YP2Z35","title":"Buy milk and a few other things for the week",` +
	`"description":"oat milk, eggs, bread, coffee","is_complete":false,"created_at":"2026-11-28T12:34:53.396076Z",` +
	`"updated_at":"2026-11-28T12:34:53.396076Z"},"at":"2026-11-28T12:34:53.396102Z"}`)

// fanOutSizes are the socket counts of the fan-out benchmarks: one user with this many
// sockets on one replica (shape (c) of the load tool puts 500 on each of two replicas).
var fanOutSizes = []int{1, 100, 1000}

// BenchmarkHubFanOut publishes one sequenced publication (memory broker) to one user with
// n real WebSockets on loopback and waits until every socket read it: one op is one
// publication delivered n times. This is the whole hot path of a change on one replica:
// decode, shard lookup, n enqueues, n writer wake-ups, n frame writes, plus the client
// reads (the clients share the CPU, as in the load tool).
func BenchmarkHubFanOut(b *testing.B) {
	for _, n := range fanOutSizes {
		b.Run(fmt.Sprintf("sockets=%d", n), func(b *testing.B) {
			hist := newMemHistory()
			r := startReplica(b, NewMemoryBroker(), hist, Config{MaxConnsPerUser: n, MaxConns: n + 10})
			var remaining atomic.Int64
			done := make(chan struct{}, 1)
			var readers sync.WaitGroup
			conns := make([]*fws.Conn, n)
			d := &fws.Dialer{HandshakeTimeout: 10 * time.Second, ReadBufferSize: 1024, WriteBufferSize: 256}
			for i := range conns {
				c := dialWith(b, d, r.url+"u1")
				c.greet(0)
				_ = c.conn.SetReadDeadline(time.Time{}) // greet's: the readers wait as long as the benchmark runs
				conns[i] = c.conn
			}
			for _, c := range conns {
				readers.Go(func() {
					for {
						_, _, err := c.ReadMessage()
						if err != nil {
							return
						}
						if remaining.Add(-1) == 0 {
							done <- struct{}{}
						}
					}
				})
			}
			b.Cleanup(func() {
				for _, c := range conns {
					_ = c.Close()
				}
				readers.Wait()
			})
			b.SetBytes(int64(len(benchFrame) * n))
			for b.Loop() {
				remaining.Store(int64(n))
				p := hist.add("u1", 0)
				p.Data = benchFrame
				if err := r.hub.Publish(context.Background(), "u1", p); err != nil {
					b.Fatal(err)
				}
				select {
				case <-done:
				case <-time.After(10 * time.Second):
					b.Fatalf("publication %d: %d of %d sockets still waiting", p.Seq, remaining.Load(), n)
				}
			}
			b.ReportMetric(float64(b.N)*float64(n)/b.Elapsed().Seconds(), "deliveries/s")
		})
	}
}

// BenchmarkHubDeliver is BenchmarkHubFanOut without the network: the sockets are
// in-memory Conns whose writes are counted and dropped, so what remains is the hub's own
// cost (decode, shard read lock, n enqueues under each client's lock, n writer goroutine
// wake-ups and their WriteMessage calls).
func BenchmarkHubDeliver(b *testing.B) {
	for _, n := range fanOutSizes {
		b.Run(fmt.Sprintf("sockets=%d", n), func(b *testing.B) {
			hist := newMemHistory()
			hub := NewHub(NewMemoryBroker(), hist, Config{MaxConnsPerUser: n, MaxConns: n + 10}, testLogger())
			var remaining atomic.Int64
			done := make(chan struct{}, 1)
			var live sync.WaitGroup
			live.Add(n)
			var serving sync.WaitGroup
			for range n {
				resume := []memFrame{{fws.TextMessage, []byte(`{"type":"resume","since":0}`)}}
				fc := newMemConn(resume, func(data []byte) {
					switch {
					case len(data) > 18 && string(data[:18]) == `{"type":"resumed",`:
						live.Done()
					case len(data) > 13 && string(data[:13]) == `{"type":"todo`:
						if remaining.Add(-1) == 0 {
							done <- struct{}{}
						}
					}
				})
				serving.Go(func() { hub.Serve(context.Background(), fc, Session{User: "u1"}, nil) })
			}
			live.Wait()
			b.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if err := hub.Shutdown(ctx); err != nil {
					b.Error(err)
				}
				serving.Wait()
			})
			for b.Loop() {
				remaining.Store(int64(n))
				p := hist.add("u1", 0)
				p.Data = benchFrame
				if err := hub.Publish(context.Background(), "u1", p); err != nil {
					b.Fatal(err)
				}
				select {
				case <-done:
				case <-time.After(10 * time.Second):
					b.Fatalf("publication %d: %d of %d sockets still waiting", p.Seq, remaining.Load(), n)
				}
			}
			b.ReportMetric(float64(b.N)*float64(n)/b.Elapsed().Seconds(), "deliveries/s")
		})
	}
}
