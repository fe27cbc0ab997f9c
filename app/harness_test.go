package app

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/evotodo/evo/app/auth"
	"github.com/evotodo/evo/store"
	"github.com/evotodo/evo/store/storetest"
)

// jwksServer is a real HTTP server standing in for Better Auth: it serves
// the JWKS of one or more issuers' keys and counts its fetches.
type jwksServer struct {
	*httptest.Server
	Issuer  *auth.Issuer
	fetches atomic.Int64
	down    atomic.Bool
	body    atomic.Pointer[[]byte] // served JWKS; nil: Issuer's
}

func newJWKSServer(t testing.TB) *jwksServer {
	t.Helper()
	js := &jwksServer{}
	js.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/auth/jwks" {
			http.NotFound(w, r)
			return
		}
		js.fetches.Add(1)
		if js.down.Load() {
			http.Error(w, "down", http.StatusBadGateway)
			return
		}
		body := js.Issuer.JWKS()
		if b := js.body.Load(); b != nil {
			body = *b
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	}))
	t.Cleanup(js.Close)
	iss, err := auth.NewIssuer(js.URL)
	if err != nil {
		t.Fatal(err)
	}
	js.Issuer = iss
	return js
}

// testServer is a whole Evo replica on a real port.
type testServer struct {
	URL  string
	JWKS *jwksServer
	srv  *Server
	stop func()
}

// backends names the stores every HTTP-level suite runs against.
var backends = []string{"sqlite", "postgres"}

// startServer runs a replica on 127.0.0.1 with backend ("sqlite" or
// "postgres") and env on top of the test defaults. It stops with t.
func startServer(t testing.TB, backend string, env map[string]string) *testServer {
	t.Helper()
	return startReplica(t, newJWKSServer(t), backend, env)
}

// startServerWith is startServer with a hook that runs on the Server
// before it serves: the place to register a route of the test's own.
func startServerWith(t testing.TB, backend string, setup func(*Server)) *testServer {
	t.Helper()
	return startReplicaWith(t, newJWKSServer(t), backend, nil, setup)
}

// startReplica is startServer with a given JWKS server; replicas that
// share one, and a DATABASE_URL and REDIS_URL in env, form a cluster.
func startReplica(t testing.TB, js *jwksServer, backend string, env map[string]string) *testServer {
	t.Helper()
	return startReplicaWith(t, js, backend, env, nil)
}

func startReplicaWith(t testing.TB, js *jwksServer, backend string, env map[string]string, setup func(*Server)) *testServer {
	t.Helper()
	return startReplicaLog(t, js, backend, env, setup, storetest.Quiet())
}

// startServerLog is startServer logging to log, for tests that read the logs.
func startServerLog(t testing.TB, backend string, env map[string]string, log *slog.Logger) *testServer {
	t.Helper()
	return startReplicaLog(t, newJWKSServer(t), backend, env, nil, log)
}

func startReplicaLog(t testing.TB, js *jwksServer, backend string, env map[string]string, setup func(*Server), log *slog.Logger) *testServer {
	t.Helper()
	vars := map[string]string{
		"ENVIRONMENT":     "test",
		"BETTER_AUTH_URL": js.URL,
		"DATA_DIR":        t.TempDir(),
		"CORS_ORIGINS":    "http://app.example",
	}
	if backend == "postgres" && env["DATABASE_URL"] == "" {
		vars["DATABASE_URL"] = storetest.PostgresURL(t)
	}
	for k, v := range env {
		vars[k] = v
	}
	cfg, err := LoadConfig(func(k string) string { return vars[k] })
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := NewServer(ctx, cfg, log, ln.Addr().(*net.TCPAddr).Port)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if setup != nil {
		setup(srv)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	ts := &testServer{URL: "http://" + ln.Addr().String(), JWKS: js, srv: srv}
	var stopped atomic.Bool
	ts.stop = func() {
		if stopped.Swap(true) {
			return
		}
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Errorf("server did not stop within 15s")
		}
	}
	t.Cleanup(ts.stop)
	return ts
}

// user creates a user and returns it with a valid token.
func (ts *testServer) user(t testing.TB) (store.User, string) {
	t.Helper()
	email := strings.ToLower(rand.Text()[:10]) + "@example.com"
	u, err := ts.srv.db.EnsureUser(context.Background(), email, "User "+email)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := ts.JWKS.Issuer.Token(u, 15*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	return u, tok
}

// do sends a request with an optional bearer token and JSON body (a string
// or []byte is sent as is) and returns the status and body.
func (ts *testServer) do(t testing.TB, method, path, token string, body any) (int, []byte) {
	t.Helper()
	res, data := roundTrip(t, ts, method, path, token, body, nil)
	return res.StatusCode, data
}

// roundTrip is the one request helper of the app tests: an optional bearer
// token, a body (nil: none; a string or []byte as is; anything else as
// JSON, with Content-Type application/json) and headers set last.
func roundTrip(t testing.TB, ts *testServer, method, path, token string, body any, header map[string]string) (*http.Response, []byte) {
	t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	case []byte:
		r = bytes.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, ts.URL+path, r)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, data
}

// decode unmarshals data into a new T or fails.
func decode[T any](t testing.TB, data []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatalf("decode %T from %s: %v", v, data, err)
	}
	return v
}

// syncBuffer is a bytes.Buffer safe for writers and a reader at once (a
// logger's or a process's output read while it runs).
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
