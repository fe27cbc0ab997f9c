package app

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/evotodo/evo/store"
)

// TestServerLimitsBody: a body up to BODY_LIMIT is read; a larger one is
// refused with 413 and a JSON error before any handler runs.
func TestServerLimitsBody(t *testing.T) {
	ts := startServer(t, "sqlite", map[string]string{"BODY_LIMIT": "1024"})
	_, tok := ts.user(t)
	fits := `{"title":"fits","description":"` + strings.Repeat("x", 1024-len(`{"title":"fits","description":""}`)) + `"}`
	if status, body := ts.do(t, "POST", "/api/todos", tok, fits); status != http.StatusCreated {
		t.Fatalf("a body of BODY_LIMIT bytes: got %d %s", status, body)
	}
	status, body := ts.do(t, "POST", "/api/todos", tok, fits[:len(fits)-2]+`x"}`)
	if eb := decode[ErrorBody](t, body); status != http.StatusRequestEntityTooLarge || eb.Code != "request_entity_too_large" {
		t.Fatalf("a body over BODY_LIMIT: got %d %s", status, body)
	}
}

// TestServerLimitsSlowRequest: a client that sends its request slower than
// REQUEST_TIMEOUT (ReadTimeout) is cut off, so slow clients cannot hold
// connections.
func TestServerLimitsSlowRequest(t *testing.T) {
	ts := startServer(t, "sqlite", map[string]string{"REQUEST_TIMEOUT": "1s"})
	conn, err := net.Dial("tcp", strings.TrimPrefix(ts.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	io.WriteString(conn, "POST /api/todos HTTP/1.1\r\nHost: evo\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	rest, err := io.ReadAll(conn) // until the server closes the connection
	took := time.Since(start)
	if err != nil || took < 900*time.Millisecond || took > 3*time.Second {
		t.Fatalf("the server closed the connection after %v (%v), want after REQUEST_TIMEOUT (1s); read %q", took, err, rest)
	}
}

// TestServerLimitsChatOutlivesTimeout: a chat may take longer than
// REQUEST_TIMEOUT. Streamed as SSE, it may pause for longer than the
// server's WriteTimeout (REQUEST_TIMEOUT, armed when the response starts)
// and then send a frame larger than the write buffers: streamChat extends
// the deadline before each write. As JSON, the answer is written once the
// run ends, and fasthttp arms WriteTimeout only then.
func TestServerLimitsChatOutlivesTimeout(t *testing.T) {
	big := strings.Repeat("long answer ", 2000) // 24 KB
	for _, tt := range []struct {
		name   string
		accept string
	}{{"SSE", "Accept: text/event-stream"}, {"JSON", "Accept: application/json"}} {
		t.Run(tt.name, func(t *testing.T) {
			gate := make(chan struct{})
			llm := newFakeLLM(t, func(n int, req llmRequest) llmReply {
				return llmReply{tokens: []string{"Thinking... ", big, "done."}, gateAfter: 1, gate: gate}
			})
			ts := startServer(t, "sqlite", llm.env("REQUEST_TIMEOUT", "1s"))
			_, tok := ts.user(t)
			time.AfterFunc(2500*time.Millisecond, func() { close(gate) }) // 2.5 x REQUEST_TIMEOUT without a write
			start := time.Now()
			res, body := call(t, ts, "POST", "/api/chat", tok, map[string]string{"message": "think hard"}, tt.accept)
			took := time.Since(start)
			if res.StatusCode != http.StatusOK {
				t.Fatalf("got %d %.300s after %v", res.StatusCode, body, took)
			}
			if took < 2*time.Second {
				t.Fatalf("the answer took %v: the pause did not happen", took)
			}
			var answer string
			if tt.name == "SSE" {
				events := readSSE(t, strings.NewReader(string(body)))
				if got, want := types(events), "chat.started chat.token chat.token chat.token chat.done"; got != want {
					t.Fatalf("events: got %s, want %s", got, want)
				}
				answer = tokens(events)
			} else {
				answer = decode[ChatReply](t, body).Response
			}
			if answer != "Thinking... "+big+"done." {
				t.Fatalf("the answer is cut: %d bytes", len(answer))
			}
		})
	}
}

// TestServerLimitsWebSocketOutlivesTimeout: a socket is not bound by
// REQUEST_TIMEOUT (the upgrade hijacks the connection and clears its
// deadlines; the hub keeps it alive with pings): it still gets events and
// answers pings long after it.
func TestServerLimitsWebSocketOutlivesTimeout(t *testing.T) {
	ts := startServer(t, "sqlite", map[string]string{"REQUEST_TIMEOUT": "1s"})
	_, tok := ts.user(t)
	ws := dialWS(t, ts, tok)
	ws.expectType("hello")
	ws.resume(0)
	time.Sleep(2500 * time.Millisecond)
	ts.createTodo(t, tok, "still here")
	if f := ws.expectType(store.EventTodoCreated); f.Todo.Title != "still here" {
		t.Fatalf("got %+v", f)
	}
	time.Sleep(1500 * time.Millisecond)
	ws.send(map[string]string{"type": "ping"})
	ws.expectType("pong")
}
