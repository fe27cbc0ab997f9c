package app

import (
	"encoding/json"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/evotodo/evo/store"
)

// BenchmarkEventFrame measures the frame encoding of a todo event: the json.Marshal of a
// store.Event that events.PublishEvent does once per change (and events.Since once per
// replayed event).
func BenchmarkEventFrame(b *testing.B) {
	at := time.Date(2026, 11, 28, 12, 34, 53, 396076000, time.UTC)
	desc := "oat milk, eggs, bread, coffee"
	ev := store.Event{Type: store.EventTodoUpdated, Seq: 123456, At: at, Todo: store.Todo{
		ID: "938a7a06-fe90-401c-84b6-6438912d8ca6", UserID: "NLPE26C4WGK5ZRBV4TQCRXSUD7YP2Z35",
		Title: "Buy milk and a few other things for the week", Description: &desc,
		CreatedAt: at, UpdatedAt: at,
	}}
	data, err := json.Marshal(ev)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := json.Marshal(ev); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkIdleSockets opens 1,000 sockets of 1,000 users on one replica (PostgreSQL,
// Redis broker) and leaves them idle, as shape d of the load tool does: one op is 1,000
// sockets connected, greeted and resumed. It reports the connect rate and the server's
// live memory per socket (heap in use and goroutine stacks, after a GC), the clients'
// share included (about 3 KB: the dialer below keeps their buffers small and runs no
// reader). With -memprofile and -memprofilerate=512 the inuse_space profile shows where
// a socket's memory is (go tool pprof -sample_index=inuse_space).
func BenchmarkIdleSockets(b *testing.B) {
	const n = 1000
	ts := startServer(b, "postgres", map[string]string{"REDIS_URL": redisURL(b), "WS_MAX_CONNS": "2000"})
	tokens := make([]string, n)
	for i := range tokens {
		_, tokens[i] = ts.user(b)
	}
	d := &websocket.Dialer{ReadBufferSize: 256, WriteBufferSize: 256, HandshakeTimeout: 10 * time.Second}
	url := "ws" + strings.TrimPrefix(ts.URL, "http") + "/ws"
	var perSocket, stackPerSocket float64
	for b.Loop() {
		b.StopTimer()
		before := liveMemory()
		b.StartTimer()
		conns := make([]*websocket.Conn, n)
		for i := range conns {
			conn, resp, err := d.Dial(url, http.Header{"Authorization": {"Bearer " + tokens[i]}})
			if err != nil {
				b.Fatalf("dial socket %d: %v", i, err)
			}
			resp.Body.Close()
			var hello frame
			if err := conn.ReadJSON(&hello); err != nil || hello.Type != "hello" {
				b.Fatalf("hello: %+v %v", hello, err)
			}
			if err := conn.WriteMessage(websocket.TextMessage, []byte(`{"type":"resume","since":0}`)); err != nil {
				b.Fatal(err)
			}
			var resumed frame
			if err := conn.ReadJSON(&resumed); err != nil || resumed.Type != "resumed" {
				b.Fatalf("resumed: %+v %v", resumed, err)
			}
			conns[i] = conn
		}
		b.StopTimer()
		after := liveMemory()
		perSocket = float64(after.total-before.total) / n
		stackPerSocket = float64(after.stack-before.stack) / n
		for _, c := range conns {
			c.Close()
		}
		deadline := time.Now().Add(10 * time.Second)
		for ts.srv.hub.Conns() > 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "sockets/s")
	b.ReportMetric(perSocket, "B/socket")
	b.ReportMetric(stackPerSocket, "stack-B/socket")
}

type memUse struct{ total, stack uint64 }

// liveMemory returns the heap in use and the goroutine stacks after a full GC.
func liveMemory() memUse {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return memUse{total: ms.HeapInuse + ms.StackInuse, stack: ms.StackInuse}
}
