package app

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/evotodo/evo/store"
)

// dialSince opens a socket to ts that resumes at connect (/ws?since=N).
func dialSince(t testing.TB, ts *testServer, token string, since int64) *wsClient {
	t.Helper()
	h := http.Header{"Authorization": {"Bearer " + token}}
	url := fmt.Sprintf("ws%s/ws?since=%d", strings.TrimPrefix(ts.URL, "http"), since)
	conn, resp, err := websocket.DefaultDialer.Dial(url, h)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial: %v (status %d)", err, status)
	}
	t.Cleanup(func() { conn.Close() })
	return &wsClient{t: t, conn: conn}
}

// TestWSConnectResume: /ws?since=N replays what came after N, then resumed,
// then live events, with no wait; a socket without since is live at once;
// a bad since is refused before the upgrade.
func TestWSConnectResume(t *testing.T) {
	ts := startServer(t, "sqlite", nil)
	_, tok := ts.user(t)
	for i := range 5 {
		ts.createTodo(t, tok, fmt.Sprintf("todo %d", i+1))
	}
	start := time.Now()
	ws := dialSince(t, ts, tok, 2)
	if h := ws.expectType("hello"); h.Seq != 5 {
		t.Fatalf("hello: got %+v, want seq 5", h)
	}
	for seq := int64(3); seq <= 5; seq++ {
		if f := ws.expectType(store.EventTodoCreated); f.Seq != seq {
			t.Fatalf("replay: got %+v, want seq %d", f, seq)
		}
	}
	if f := ws.expectType("resumed"); f.Since != 2 || f.Seq != 5 || f.Replayed != 3 {
		t.Fatalf("resumed: got %+v", f)
	}
	ts.createTodo(t, tok, "live")
	if f := ws.expectType(store.EventTodoCreated); f.Seq != 6 {
		t.Fatalf("live: got %+v", f)
	}
	if took := time.Since(start); took > 1500*time.Millisecond {
		t.Errorf("replay and a live event took %v (waited for a resume frame?)", took)
	}

	plain := dialWS(t, ts, tok)
	plain.expectType("hello")
	start = time.Now()
	ts.createTodo(t, tok, "at once")
	if f := plain.expectType(store.EventTodoCreated); f.Seq != 7 {
		t.Fatalf("live without since: got %+v", f)
	}
	if took := time.Since(start); took > 1500*time.Millisecond {
		t.Errorf("a socket without since got its first live event after %v", took)
	}

	for _, bad := range []string{"-1", "x", "1.5", "+3", "99999999999999999999"} {
		res, body := roundTrip(t, ts, "GET", "/ws?since="+bad, tok, nil, map[string]string{
			"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
		})
		eb := decode[ErrorBody](t, body)
		if res.StatusCode != http.StatusUnprocessableEntity || eb.Field != "since" {
			t.Errorf("since=%s: got %d %s, want 422 naming since", bad, res.StatusCode, body)
		}
	}
}

// TestWSLateResumeTypedByHand is the README's wscat session at human speed:
// a resume typed seconds after connect replays what the socket has not sent
// (nothing was pruned), not resync.
func TestWSLateResumeTypedByHand(t *testing.T) {
	ts := startServer(t, "sqlite", nil)
	_, tok := ts.user(t)
	for i := range 9 {
		ts.createTodo(t, tok, fmt.Sprintf("todo %d", i+1))
	}
	ws := dialWS(t, ts, tok)
	if h := ws.expectType("hello"); h.Seq != 9 {
		t.Fatalf("hello: got %+v", h)
	}
	time.Sleep(2500 * time.Millisecond) // longer than the old WS_RESUME_GRACE
	got := ws.resume(6)
	if len(got) != 3 || got[0].Seq != 7 || got[2].Seq != 9 {
		t.Fatalf("late resume from 6: got %+v, want 7..9", got)
	}
	ts.createTodo(t, tok, "after")
	if f := ws.expectType(store.EventTodoCreated); f.Seq != 10 {
		t.Fatalf("live: got %+v", f)
	}
}

// TestWSHelloNamesReplica: hello says which replica the socket is on.
func TestWSHelloNamesReplica(t *testing.T) {
	named := startServer(t, "sqlite", map[string]string{"REPLICA_ID": "evo7"})
	_, tok := named.user(t)
	ws := dialWS(t, named, tok)
	var hello struct {
		Type, Replica string
	}
	ws.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if err := ws.conn.ReadJSON(&hello); err != nil || hello.Type != "hello" || hello.Replica != "evo7" {
		t.Fatalf("hello: got %+v, %v; want replica evo7", hello, err)
	}

	ts := startServer(t, "sqlite", nil)
	_, tok = ts.user(t)
	ws = dialWS(t, ts, tok)
	ws.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if err := ws.conn.ReadJSON(&hello); err != nil || !strings.HasSuffix(hello.Replica, ":"+ts.URL[strings.LastIndex(ts.URL, ":")+1:]) {
		t.Fatalf("hello: got %+v, %v; want host:port", hello, err)
	}
}

// dropPublishes is a failpoint: the writer commits its change and dies
// before publishing it.
type dropPublishes struct{}

func (dropPublishes) PublishEvent(context.Context, string, store.Event) {}

// TestWSWriterDiesBeforePublish: a change committed on replica A whose
// publish never happens (A died right after the commit) reaches the user's
// socket on replica B within about 2 s, although the user changes nothing
// else. On SQLite (one replica) the same holds for a change written by
// another process on the data directory, which publishes nothing.
func TestWSWriterDiesBeforePublish(t *testing.T) {
	t.Run("cluster", func(t *testing.T) {
		a, b := startCluster(t)
		testWriterDies(t, a, b)
	})
	t.Run("sqlite", func(t *testing.T) {
		ts := startServer(t, "sqlite", nil)
		testWriterDies(t, ts, ts)
	})
}

func testWriterDies(t *testing.T, a, b *testServer) {
	_, tok := a.user(t)
	onB := dialWS(t, b, tok)
	onB.expectType("hello")
	onB.resume(0)
	a.createTodo(t, tok, "published")
	if f := onB.expectType(store.EventTodoCreated); f.Seq != 1 {
		t.Fatalf("got %+v", f)
	}

	a.srv.todos = store.NewTodos(a.srv.db, dropPublishes{})
	start := time.Now()
	todo := a.createTodo(t, tok, "committed, never published")
	onB.conn.SetReadDeadline(time.Now().Add(6 * time.Second))
	_, data, err := onB.conn.ReadMessage()
	if err != nil {
		t.Fatalf("the committed event never came: %v", err)
	}
	took := time.Since(start)
	var f frame
	if err := json.Unmarshal(data, &f); err != nil || f.Seq != 2 || f.Todo.ID != todo.ID {
		t.Fatalf("got %s, want seq 2 of todo %s", data, todo.ID)
	}
	t.Logf("delivered from the log after %v", took)
	if took > 3*time.Second {
		t.Errorf("delivered after %v, want about 2 s at most", took)
	}
}
