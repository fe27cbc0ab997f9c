package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/evotodo/evo/realtime"
	"github.com/evotodo/evo/store"
	"github.com/evotodo/evo/store/storetest"
)

// redisURL returns the test Redis, skipping (failing in CI) without one.
func redisURL(t testing.TB) string {
	t.Helper()
	url := "redis://127.0.0.1:6379/0"
	opts, _ := redis.ParseURL(url)
	c := redis.NewClient(opts)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		storetest.Unreachable(t, "Redis ("+url+")", err)
	}
	return url
}

// frame is one server frame, decoded loosely.
type frame struct {
	Type     string     `json:"type"`
	Seq      int64      `json:"seq"`
	Since    int64      `json:"since"`
	Replayed int        `json:"replayed"`
	UserID   string     `json:"user_id"`
	Todo     store.Todo `json:"todo"`
	Code     string     `json:"code"`
	Message  string     `json:"message"`
}

type wsClient struct {
	t    testing.TB
	conn *websocket.Conn
}

// dialWS opens a socket to ts with token in the Authorization header.
func dialWS(t testing.TB, ts *testServer, token string) *wsClient {
	t.Helper()
	h := http.Header{}
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
	conn, resp, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(ts.URL, "http")+"/ws", h)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial: %v (status %d)", err, status)
	}
	c := &wsClient{t: t, conn: conn}
	t.Cleanup(func() { conn.Close() })
	return c
}

func (c *wsClient) send(v any) {
	c.t.Helper()
	data, _ := json.Marshal(v)
	if err := c.conn.WriteMessage(websocket.TextMessage, data); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

// read returns the next frame, failing after 5 s.
func (c *wsClient) read() frame {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, data, err := c.conn.ReadMessage()
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	var f frame
	if err := json.Unmarshal(data, &f); err != nil {
		c.t.Fatalf("decode %s: %v", data, err)
	}
	return f
}

// expectType reads the next frame and checks its type.
func (c *wsClient) expectType(typ string) frame {
	c.t.Helper()
	f := c.read()
	if f.Type != typ {
		c.t.Fatalf("frame: got %+v, want type %s", f, typ)
	}
	return f
}

// expectClose reads until the socket closes and checks the close code.
func (c *wsClient) expectClose(code int, within time.Duration) {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(within))
	for {
		_, _, err := c.conn.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != code {
			c.t.Fatalf("close: got %v, want code %d", err, code)
		}
		return
	}
}

// resume sends resume{since} and returns the replayed events up to the
// resumed frame.
func (c *wsClient) resume(since int64) []frame {
	c.t.Helper()
	c.send(map[string]any{"type": "resume", "since": since})
	var got []frame
	for {
		f := c.read()
		switch f.Type {
		case "resumed":
			return got
		case "hello":
		default:
			got = append(got, f)
		}
	}
}

func (ts *testServer) createTodo(t testing.TB, token, title string) store.Todo {
	t.Helper()
	status, body := ts.do(t, "POST", "/api/todos", token, map[string]string{"title": title})
	if status != http.StatusCreated {
		t.Fatalf("create: got %d %s", status, body)
	}
	return decode[store.Todo](t, body)
}

// startCluster runs two replicas sharing PostgreSQL, Redis and an issuer.
func startCluster(t testing.TB) (a, b *testServer) {
	t.Helper()
	js := newJWKSServer(t)
	env := map[string]string{"DATABASE_URL": storetest.PostgresURL(t), "REDIS_URL": redisURL(t)}
	return startReplica(t, js, "postgres", env), startReplica(t, js, "postgres", env)
}

func TestWSHelloAndLiveEvents(t *testing.T) {
	for _, b := range backends {
		t.Run(b, func(t *testing.T) {
			ts := startServer(t, b, nil)
			u, tok := ts.user(t)
			ws := dialWS(t, ts, tok)
			if hello := ws.expectType("hello"); hello.UserID != u.ID || hello.Seq != 0 {
				t.Fatalf("hello: got %+v, want user %s seq 0", hello, u.ID)
			}
			if got := ws.resume(0); len(got) != 0 {
				t.Fatalf("replay of an empty log: got %+v", got)
			}
			todo := ts.createTodo(t, tok, "watch me")
			f := ws.expectType(store.EventTodoCreated)
			if f.Seq != 1 || f.Todo.ID != todo.ID || f.Todo.Title != "watch me" {
				t.Fatalf("event: got %+v", f)
			}
			ts.do(t, "PATCH", "/api/todos/"+todo.ID, tok, map[string]bool{"is_complete": true})
			if f := ws.expectType(store.EventTodoUpdated); f.Seq != 2 || !f.Todo.IsComplete {
				t.Fatalf("event: got %+v", f)
			}
			ts.do(t, "DELETE", "/api/todos/"+todo.ID, tok, nil)
			if f := ws.expectType(store.EventTodoDeleted); f.Seq != 3 || f.Todo.ID != todo.ID {
				t.Fatalf("event: got %+v", f)
			}
			ws.send(map[string]string{"type": "ping"})
			ws.expectType("pong")
			ws.send(map[string]string{"type": "no-such-frame"})
			if f := ws.expectType("error"); f.Code != store.CodeBadRequest {
				t.Fatalf("unknown frame: got %+v", f)
			}
		})
	}
}

func TestWSUpgradeAuth(t *testing.T) {
	ts := startServer(t, "sqlite", nil)
	_, tok := ts.user(t)
	url := "ws" + strings.TrimPrefix(ts.URL, "http") + "/ws"
	tests := []struct {
		name   string
		query  string
		header http.Header
		want   int
	}{
		{"NoToken", "", nil, http.StatusUnauthorized},
		{"BadToken", "?token=abc.def.ghi", nil, http.StatusUnauthorized},
		{"BadOrigin", "?token=" + tok, http.Header{"Origin": {"http://evil.example"}}, http.StatusForbidden},
		{"QueryToken", "?token=" + tok, http.Header{"Origin": {"http://app.example"}}, http.StatusSwitchingProtocols},
		{"SameOrigin", "?token=" + tok, http.Header{"Origin": {ts.URL}}, http.StatusSwitchingProtocols},
		{"SameHostOtherScheme", "?token=" + tok, http.Header{"Origin": {"ftp" + strings.TrimPrefix(ts.URL, "http")}}, http.StatusForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn, resp, err := websocket.DefaultDialer.Dial(url+tt.query, tt.header)
			if conn != nil {
				conn.Close()
			}
			if resp == nil {
				t.Fatalf("no response: %v", err)
			}
			if resp.StatusCode != tt.want {
				t.Fatalf("status: got %d, want %d", resp.StatusCode, tt.want)
			}
		})
	}
}

// TestWSAcrossReplicas: a change made over REST on replica A reaches the
// user's socket on replica B, never another user's; a client that misses
// 50 changes and reconnects to the other replica gets exactly those.
func TestWSAcrossReplicas(t *testing.T) {
	a, b := startCluster(t)
	_, tok := a.user(t)
	_, otherTok := a.user(t)

	onB := dialWS(t, b, tok)
	onB.expectType("hello")
	onB.resume(0)
	other := dialWS(t, b, otherTok)
	other.expectType("hello")
	other.resume(0)

	todo := a.createTodo(t, tok, "from A")
	if f := onB.expectType(store.EventTodoCreated); f.Seq != 1 || f.Todo.ID != todo.ID {
		t.Fatalf("on B: got %+v", f)
	}
	// The other user's first frame is their own change, not the first user's.
	mine := a.createTodo(t, otherTok, "mine")
	if f := other.expectType(store.EventTodoCreated); f.Todo.ID != mine.ID || f.Seq != 1 {
		t.Fatalf("other user got %+v, want only their own todo", f)
	}

	onB.conn.Close()
	for i := range 50 {
		a.createTodo(t, tok, fmt.Sprintf("missed %d", i))
	}
	onA := dialWS(t, a, tok)
	if hello := onA.expectType("hello"); hello.Seq != 51 {
		t.Fatalf("hello: got seq %d, want 51", hello.Seq)
	}
	got := onA.resume(1)
	if len(got) != 50 {
		t.Fatalf("replay: got %d events, want 50", len(got))
	}
	for i, f := range got {
		if f.Seq != int64(i+2) || f.Todo.Title != fmt.Sprintf("missed %d", i) {
			t.Fatalf("replay %d: got seq %d %q", i, f.Seq, f.Todo.Title)
		}
	}
	b.createTodo(t, tok, "live")
	if f := onA.expectType(store.EventTodoCreated); f.Seq != 52 || f.Todo.Title != "live" {
		t.Fatalf("live after replay: got %+v", f)
	}
}

func TestWSTokenExpiry(t *testing.T) {
	ts := startServer(t, "sqlite", nil)
	u, _ := ts.user(t)
	short, err := ts.JWKS.Issuer.Token(u, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	expiring := dialWS(t, ts, short)
	expiring.expectType("hello")
	refreshed := dialWS(t, ts, short)
	refreshed.expectType("hello")
	fresh, _ := ts.JWKS.Issuer.Token(u, time.Hour)
	refreshed.send(map[string]string{"type": "auth", "token": fresh})
	refreshed.expectType("auth.ok")

	expiring.expectClose(realtime.CloseTokenExpired, 5*time.Second)
	time.Sleep(time.Second) // well past the first token's expiry
	refreshed.send(map[string]string{"type": "ping"})
	refreshed.expectType("pong")

	_, otherTok := ts.user(t)
	refreshed.send(map[string]string{"type": "auth", "token": otherTok})
	refreshed.expectClose(realtime.CloseForbidden, 5*time.Second)
}

func TestWSShutdownGoingAway(t *testing.T) {
	ts := startServer(t, "sqlite", nil)
	_, tok := ts.user(t)
	ws := dialWS(t, ts, tok)
	ws.expectType("hello")
	start := time.Now()
	go ts.stop()
	ws.expectClose(websocket.CloseGoingAway, 5*time.Second)
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("shutdown took %v", took)
	}
}
