package app

import (
	"bufio"
	"bytes"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"

	"github.com/evotodo/evo/realtime"
	"github.com/evotodo/evo/store"
)

// scrape returns ts's metrics: each series' value, keyed as the text
// format writes it: name{label="value",...} with the labels sorted.
func scrape(t testing.TB, ts *testServer, headers ...string) map[string]float64 {
	t.Helper()
	res, body := call(t, ts, "GET", "/metrics", "", nil, headers...)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: got %d %s", res.StatusCode, body)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

// TestMetricsRouteLabel: the route label is the pattern of the route that
// serves a path, whatever its method and case; anything else is
// "unmatched", so scanners cannot create series.
func TestMetricsRouteLabel(t *testing.T) {
	table := newRouteTable([]fiber.Route{
		{Method: "GET", Path: "/"}, {Method: "GET", Path: "/health"}, {Method: "GET", Path: "/api/todos"},
		{Method: "POST", Path: "/api/todos"}, {Method: "GET", Path: "/api/todos/:id"}, {Method: "DELETE", Path: "/api/todos/:id"},
		{Method: "GET", Path: "/api/chat/:user_id"}, {Method: "POST", Path: "/api/dev/token"}, {Method: "GET", Path: "/api/:x/token"},
		{Method: "GET", Path: "/static/*"},
	})
	tests := []struct{ path, want string }{
		{"/", "/"},
		{"/health", "/health"},
		{"/health/", "/health"},
		{"/API/Todos", "/api/todos"},
		{"/api/todos/938a7a06-fe90-401c-84b6-6438912d8ca6", "/api/todos/:id"},
		{"/api/todos/anything", "/api/todos/:id"},
		{"/api/todos/a/b", unmatchedRoute},
		{"/api/chat/U1", "/api/chat/:user_id"},
		{"/api/dev/token", "/api/dev/token"}, // the literal route beats /api/:x/token
		{"/api/foo/token", "/api/:x/token"},
		{"/wp-admin.php", unmatchedRoute},
		{"/api", unmatchedRoute},
		{"", "/"},
		{"//", "/"},
		{"/api/todos//", "/api/todos"},
		{"/api//todos", unmatchedRoute},
		{"/api/todos/x/", "/api/todos/:id"},
		{"/api/chat//", unmatchedRoute},
		{"/api//token", unmatchedRoute}, // an empty segment is no parameter
		{"/static", "/static/*"},        // as Fiber: the wildcard may be empty
		{"/static/", "/static/*"},
		{"/static/a", "/static/*"},
		{"/static/a/b//c", "/static/*"},
	}
	for _, tt := range tests {
		if got := table.match(tt.path); got != tt.want {
			t.Errorf("match(%q): got %q, want %q", tt.path, got, tt.want)
		}
	}
}

// TestMetricsCountersMove drives a replica through REST calls, sockets with
// live and replayed events, a protocol error, inbound frames over the rate
// limit, chat runs with tool calls, MCP tool calls and REST writes over the
// limit, and checks that every series it touched moved.
func TestMetricsCountersMove(t *testing.T) {
	ts := startServer(t, "sqlite", map[string]string{
		"RATE_LIMIT_WRITES": "8", "WS_RATE_LIMIT": "1", "WS_RATE_BURST": "3"})
	_, tok := ts.user(t)
	before := scrape(t, ts)

	// REST.
	a := ts.createTodo(t, tok, "one")
	ts.createTodo(t, tok, "two")
	ts.do(t, "GET", "/api/todos/"+a.ID, tok, nil)
	ts.do(t, "GET", "/api/todos/"+uuid.NewString(), tok, nil) // 404
	ts.do(t, "GET", "/no/such/page", "", nil)

	// A live socket: hello, resume, live events.
	live := dialWS(t, ts, tok)
	live.expectType("hello")
	live.resume(2) // nothing to replay
	ts.do(t, "PATCH", "/api/todos/"+a.ID, tok, map[string]bool{"is_complete": true})
	live.expectType(store.EventTodoUpdated)
	// A socket that missed events: resume from 0 replays 3.
	late := dialWS(t, ts, tok)
	late.expectType("hello")
	if got := late.resume(0); len(got) != 3 {
		t.Fatalf("replayed %d events, want 3", len(got))
	}
	open := scrape(t, ts)["evo_ws_connections"]
	// Frames over WS_RATE_LIMIT (burst 3): dropped, answered with one error.
	for range 6 {
		live.send(map[string]string{"type": "ping"})
	}
	// A protocol error closes the socket with 3500.
	late.send(map[string]any{"type": "resume", "since": -1})
	late.expectClose(realtime.CloseBadRequest, 5*time.Second)

	// Chat with the built-in agent: runs, model calls, tokens, tool calls.
	if status, body := ts.do(t, "POST", "/api/chat", tok, map[string]string{"message": "add buy milk"}); status != http.StatusOK {
		t.Fatalf("chat: got %d %s", status, body)
	}
	ts.do(t, "POST", "/api/chat", tok, map[string]string{"message": "delete no such thing"})

	// MCP tool calls: one that works, one that fails.
	mcpHeaders := []string{"Accept: application/json, text/event-stream", "Mcp-Protocol-Version: 2025-06-18"}
	call(t, ts, "POST", "/mcp", tok, map[string]any{"jsonrpc": "2.0", "id": 1, "method": "tools/call",
		"params": map[string]any{"name": "add_task", "arguments": map[string]string{"title": "via mcp"}}}, mcpHeaders...)
	call(t, ts, "POST", "/mcp", tok, map[string]any{"jsonrpc": "2.0", "id": 2, "method": "tools/call",
		"params": map[string]any{"name": "delete_task", "arguments": map[string]string{"task_id": uuid.NewString()}}}, mcpHeaders...)

	// REST writes over RATE_LIMIT_WRITES (8; 3 made so far).
	for i := 0; ; i++ {
		status, body := ts.do(t, "POST", "/api/todos", tok, map[string]string{"title": "more"})
		if status == http.StatusTooManyRequests {
			break
		}
		if status != http.StatusCreated || i > 8 {
			t.Fatalf("write %d: got %d %s", i, status, body)
		}
	}

	after := scrape(t, ts)
	if open != 2 {
		t.Errorf("evo_ws_connections: got %v with two sockets open", open)
	}
	tests := []struct {
		series string
		min    float64
	}{
		{`evo_http_requests_total{method="POST",route="/api/todos",status="201"}`, 2},
		{`evo_http_requests_total{method="POST",route="/api/todos",status="429"}`, 1},
		{`evo_http_requests_total{method="GET",route="/api/todos/:id",status="200"}`, 1},
		{`evo_http_requests_total{method="GET",route="/api/todos/:id",status="404"}`, 1},
		{`evo_http_requests_total{method="GET",route="unmatched",status="404"}`, 1},
		{`evo_http_requests_total{method="GET",route="/ws",status="101"}`, 2},
		{`evo_http_requests_total{method="POST",route="/api/chat",status="200"}`, 2},
		{`evo_http_requests_total{method="POST",route="/mcp",status="200"}`, 2},
		{`evo_http_request_duration_seconds_count{method="POST",route="/api/todos"}`, 3},
		{`evo_ws_frames_sent_total`, 10},
		{`evo_ws_closes_total{code="3500"}`, 1},
		{`evo_ws_catchups_total{reason="connect"}`, 2},
		{`evo_ws_catchups_total{reason="resume"}`, 1},
		{`evo_ws_events_replayed_total`, 3},
		{`evo_broker_publishes_total{outcome="ok"}`, 4},
		{`evo_broker_publish_duration_seconds_count`, 4},
		{`evo_broker_received_total`, 1},
		{`evo_chat_runs_total{outcome="completed"}`, 2},
		{`evo_chat_run_duration_seconds_count{outcome="completed"}`, 2},
		{`evo_model_call_duration_seconds_count{outcome="ok",provider="builtin"}`, 4},
		{`evo_model_tokens_total{provider="builtin"}`, 2},
		{`evo_tool_calls_total{outcome="ok",tool="add_task",via="chat"}`, 1},
		{`evo_tool_calls_total{outcome="ok",tool="list_tasks",via="chat"}`, 1},
		{`evo_tool_calls_total{outcome="ok",tool="add_task",via="mcp"}`, 1},
		{`evo_tool_calls_total{outcome="not_found",tool="delete_task",via="mcp"}`, 1},
		{`evo_rate_limited_total{surface="writes"}`, 1},
		{`evo_rate_limited_total{surface="ws"}`, 1},
	}
	for _, tt := range tests {
		if got := after[tt.series] - before[tt.series]; got < tt.min {
			t.Errorf("%s: moved by %v, want at least %v", tt.series, got, tt.min)
		}
	}
	for _, series := range []string{`evo_build_info{version="dev"}`, "go_goroutines", `evo_ws_slow_consumer_disconnects_total`} {
		if _, ok := after[series]; !ok {
			t.Errorf("%s: not exported", series)
		}
	}
}

// TestMetricsBrokerAcrossReplicas: a change made on one replica is
// published to Redis there and received on the replica holding the socket.
func TestMetricsBrokerAcrossReplicas(t *testing.T) {
	a, b := startCluster(t)
	_, tok := a.user(t)
	ws := dialWS(t, b, tok)
	ws.expectType("hello")
	ws.resume(0)
	beforeA, beforeB := scrape(t, a), scrape(t, b)
	a.createTodo(t, tok, "across")
	ws.expectType(store.EventTodoCreated)
	const published, received = `evo_broker_publishes_total{outcome="ok"}`, "evo_broker_received_total"
	// The publish is counted when Redis answers replica a, which can come after
	// replica b already delivered the frame (the change's event is published
	// without waiting): wait a little for it.
	afterA := scrape(t, a)
	for deadline := time.Now().Add(2 * time.Second); afterA[published] == beforeA[published] && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
		afterA = scrape(t, a)
	}
	afterB := scrape(t, b)
	if got := afterA[published] - beforeA[published]; got != 1 {
		t.Errorf("replica a published %v, want 1", got)
	}
	if got := afterB[received] - beforeB[received]; got != 1 {
		t.Errorf("replica b received %v, want 1", got)
	}
	if got := afterB["evo_ws_frames_sent_total"] - beforeB["evo_ws_frames_sent_total"]; got != 1 {
		t.Errorf("replica b sent %v frames, want 1", got)
	}
}

// TestMetricsToken: with METRICS_TOKEN set, /metrics needs it as a bearer
// token.
func TestMetricsToken(t *testing.T) {
	const token = "metrics-secret-0123456789"
	ts := startServer(t, "sqlite", map[string]string{"METRICS_TOKEN": token})
	for _, tt := range []struct {
		name, header string
		want         int
	}{
		{"NoToken", "", http.StatusUnauthorized},
		{"WrongToken", "Authorization: Bearer metrics-secret-0123456780", http.StatusUnauthorized},
		{"UserScheme", "Authorization: Basic " + token, http.StatusUnauthorized},
		{"OK", "Authorization: Bearer " + token, http.StatusOK},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var hs []string
			if tt.header != "" {
				hs = append(hs, tt.header)
			}
			res, body := call(t, ts, "GET", "/metrics", "", nil, hs...)
			if res.StatusCode != tt.want {
				t.Fatalf("got %d %s, want %d", res.StatusCode, body, tt.want)
			}
			if tt.want == http.StatusUnauthorized && (res.Header.Get("WWW-Authenticate") == "" || !bytes.Contains(body, []byte(`"unauthorized"`))) {
				t.Fatalf("401 without challenge or JSON error: %v %s", res.Header, body)
			}
		})
	}
}
