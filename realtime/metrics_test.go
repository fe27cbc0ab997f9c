package realtime

import (
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	fws "github.com/fasthttp/websocket"
)

// countMetrics records what hubs report.
type countMetrics struct {
	mu     sync.Mutex
	counts map[string]int // by method, and method:argument
}

func newCountMetrics() *countMetrics { return &countMetrics{counts: map[string]int{}} }

func (m *countMetrics) add(key string, n int) {
	m.mu.Lock()
	m.counts[key] += n
	m.mu.Unlock()
}

func (m *countMetrics) get(key string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.counts[key]
}

func (m *countMetrics) FramesSent(n int)      { m.add("FramesSent", n) }
func (m *countMetrics) FramesDropped(n int)   { m.add("FramesDropped", n) }
func (m *countMetrics) SocketClosed(code int) { m.add(fmt.Sprint("SocketClosed:", code), 1) }
func (m *countMetrics) CatchUp(reason string) { m.add("CatchUp:"+reason, 1) }
func (m *countMetrics) EventsReplayed(n int)  { m.add("EventsReplayed", n) }
func (m *countMetrics) Resync()               { m.add("Resync", 1) }
func (m *countMetrics) FrameRateLimited()     { m.add("FrameRateLimited", 1) }
func (m *countMetrics) BrokerPublish(_ time.Duration, err error) {
	if err != nil {
		m.add("BrokerPublish:error", 1)
	} else {
		m.add("BrokerPublish:ok", 1)
	}
}
func (m *countMetrics) BrokerReceive()      { m.add("BrokerReceive", 1) }
func (m *countMetrics) BrokerResubscribed() { m.add("BrokerResubscribed", 1) }
func (m *countMetrics) EventHeld()          { m.add("EventHeld", 1) }
func (m *countMetrics) GapExpired()         { m.add("GapExpired", 1) }

// TestHubMetrics: the hub reports frames sent and dropped, closes by code
// (a slow consumer, a refusal), catch-ups by reason, replayed events,
// resyncs, rate-limited frames and its broker calls.
func TestHubMetrics(t *testing.T) {
	for _, bk := range backends {
		t.Run(bk.name, func(t *testing.T) {
			m := newCountMetrics()
			e := bk.setup(t, Config{QueueSize: 8, RateLimit: 1, RateBurst: 2, MaxConnsPerUser: 2, Metrics: m})

			// Resume: 2 events replayed, then live ones, then a gap.
			for range 3 {
				e.hist.add("u1", 0)
			}
			c := dial(t, e.b.url+"u1")
			c.greet(1)
			emit(t, e.a.hub, e.hist, "u1", 0)
			emit(t, e.a.hub, e.hist, "u1", 0)
			e.hist.add("u1", 0) // never published: the next one reveals a gap
			emit(t, e.a.hub, e.hist, "u1", 0)
			seqs, _ := c.seqsUntil(7, 5*time.Second)
			checkSeqs(t, seqs, span(4, 7)) // greet read 2 and 3

			// Inbound frames over the rate limit.
			for range 6 {
				c.send(`{"type":"ping"}`)
			}
			// A third socket of u1 is refused (MaxConnsPerUser 2).
			dial(t, e.b.url+"u1").expect("hello")
			dial(t, e.b.url+"u1").expectClose(CloseTooManyConnections, 5*time.Second)

			// A resume into pruned events is answered with resync.
			for range 10 {
				e.hist.add("u3", 0)
			}
			e.hist.prune("u3", 8)
			r := dial(t, e.b.url+"u3")
			r.expect("hello")
			r.send(`{"type":"resume","since":2}`)
			r.expect("resync")

			// A socket that does not read overflows its queue.
			d := &fws.Dialer{HandshakeTimeout: 5 * time.Second, ReadBufferSize: 1024,
				NetDialContext: (&net.Dialer{Control: smallRcvBuf}).DialContext}
			slow := dialWith(t, d, e.b.url+"u2")
			slow.greet(0)
			for i := 0; i < 200 && m.get(fmt.Sprint("SocketClosed:", CloseSlowConsumer)) == 0; i++ {
				emit(t, e.a.hub, e.hist, "u2", 64<<10)
			}
			slow.expectClose(CloseSlowConsumer, 10*time.Second)

			if e.killPubSub != nil {
				e.killPubSub(t)
				waitFor(t, "resubscription reported", func() bool {
					return m.get("BrokerResubscribed") > 0 && m.get("CatchUp:"+CatchUpResubscribed) > 0
				})
			}

			tests := []struct {
				key string
				min int
			}{
				{"CatchUp:" + CatchUpResume, 2},  // u1, u3 (u2's needs no read)
				{"CatchUp:" + CatchUpConnect, 3}, // every socket, from hello
				{"CatchUp:" + CatchUpGap, 1},
				{"EventsReplayed", 2 + 1}, // the resume, then the gap's event
				{"Resync", 1},
				{"FramesSent", 1 + 2 + 1 + 4}, // hello, replay, resumed, live
				{"FramesDropped", 1},
				{fmt.Sprint("SocketClosed:", CloseSlowConsumer), 1},
				{fmt.Sprint("SocketClosed:", CloseTooManyConnections), 1},
				{"FrameRateLimited", 1},
				{"BrokerPublish:ok", 4},
				{"BrokerReceive", 4},
			}
			for _, tt := range tests {
				if got := m.get(tt.key); got < tt.min {
					t.Errorf("%s: got %d, want at least %d", tt.key, got, tt.min)
				}
			}
			if got := m.get("BrokerPublish:error"); got != 0 {
				t.Errorf("failed publishes: %d", got)
			}
		})
	}
}
