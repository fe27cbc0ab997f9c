package app

import (
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/evotodo/evo/store/storetest"
)

// TestTokenSubjectWithNUL: a correctly signed token whose sub holds a NUL byte
// is a 401 on both stores (PostgreSQL used to fail the user lookup: 500).
func TestTokenSubjectWithNUL(t *testing.T) {
	for _, b := range backends {
		t.Run(b, func(t *testing.T) {
			ts := startServer(t, b, nil)
			u, _ := ts.user(t)
			for _, sub := range []string{u.ID + "\x00", "\x00", "a\x00b"} {
				tok := signedBy(t, ts, with(ts.baClaims(u), map[string]any{"sub": sub}))
				status, header, data := authGet(t, ts, "GET", "/api/todos", "Bearer "+tok, "")
				wantAuthFailure(t, status, header, data, 401, "token subject (sub) is not a valid user id", tok)
			}
		})
	}
}

// TestRequestIDFromClients: a client's X-Request-ID is echoed only when it is
// 1-128 characters of [A-Za-z0-9._:-]; anything else gets a fresh one.
func TestRequestIDFromClients(t *testing.T) {
	ts := startServer(t, "sqlite", nil)
	for _, tt := range []struct {
		name, sent string
		echoed     bool
	}{
		{"Plain", "req-42.a_b:c", true},
		{"MaxLength", strings.Repeat("a", 128), true},
		{"TooLong", strings.Repeat("a", 129), false},
		{"HugeHeader", strings.Repeat("x", 15<<10), false},
		{"Space", "a b", false},
		{"Markup", "<script>alert(1)</script>", false},
		{"Quote", `a"b`, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			res, _ := roundTrip(t, ts, "GET", "/health", "", nil, map[string]string{"X-Request-ID": tt.sent})
			got := res.Header.Get("X-Request-ID")
			switch {
			case tt.echoed && got != tt.sent:
				t.Errorf("X-Request-ID %q: answered %q, want it echoed", tt.sent, got)
			case !tt.echoed && (got == tt.sent || !validRequestID(got)):
				t.Errorf("X-Request-ID of %d bytes: answered %q (%d bytes), want a fresh id", len(tt.sent), got, len(got))
			}
		})
	}
}

// TestNoSniff: JSON answers, errors included, carry X-Content-Type-Options: nosniff.
func TestNoSniff(t *testing.T) {
	ts := startServer(t, "sqlite", nil)
	_, tok := ts.user(t)
	for _, tt := range []struct{ method, path, token string }{
		{"GET", "/api/todos", tok},
		{"GET", "/api/todos", ""},
		{"GET", "/api/todos/nope", tok},
		{"GET", "/no/such/route", ""},
		{"GET", "/health", ""},
		{"GET", "/ready", ""},
	} {
		res, body := roundTrip(t, ts, tt.method, tt.path, tt.token, nil, nil)
		if got := res.Header.Get("X-Content-Type-Options"); got != "nosniff" {
			t.Errorf("%s %s: %d %s with X-Content-Type-Options %q", tt.method, tt.path, res.StatusCode, body, got)
		}
	}
}

// TestDevIssuerVerifiesInProcess: in dev mode a server listening on ::1 (HOST=::1)
// accepts its own tokens. It used to fetch its JWKS from http://127.0.0.1:PORT,
// where nothing listens, and answer 503.
func TestDevIssuerVerifiesInProcess(t *testing.T) {
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	vars := map[string]string{"ENVIRONMENT": "test", "DATA_DIR": t.TempDir(), "HOST": "::1"}
	cfg, err := LoadConfig(getenv(vars))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := NewServer(ctx, cfg, storetest.Quiet(), ln.Addr().(*net.TCPAddr).Port)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	ts := &testServer{URL: "http://" + ln.Addr().String(), srv: srv}
	status, body := ts.do(t, "POST", "/api/dev/token", "", map[string]string{"email": "ada@example.com"})
	if status != http.StatusOK {
		t.Fatalf("dev token: %d %s", status, body)
	}
	tok := decode[struct {
		Token string `json:"token"`
	}](t, body).Token
	if status, body := ts.do(t, "GET", "/api/todos", tok, nil); status != http.StatusOK {
		t.Fatalf("GET /api/todos with a dev token on [::1]: %d %s", status, body)
	}
}

// TestDevIssuerNeedsOptInWithPostgresOrRedis: the dev issuer (no BETTER_AUTH_URL)
// does not start against DATABASE_URL or REDIS_URL unless DEV_AUTH is set, and
// says which auth mode is on when it starts.
func TestDevIssuerNeedsOptInWithPostgresOrRedis(t *testing.T) {
	pg := storetest.PostgresURL(t)
	for _, env := range []map[string]string{
		{"DATABASE_URL": pg},
		{"REDIS_URL": "redis://127.0.0.1:6379/0"},
		{"DATABASE_URL": pg, "REDIS_URL": "redis://127.0.0.1:6379/0", "ENVIRONMENT": "test"},
	} {
		env["DATA_DIR"] = t.TempDir()
		env["PORT"] = "0"
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second) // a server that starts is stopped
		err := Run(ctx, []string{"serve"}, getenv(env), io.Discard, io.Discard)
		cancel()
		if err == nil || !strings.Contains(err.Error(), "BETTER_AUTH_URL") || !strings.Contains(err.Error(), "DEV_AUTH") {
			t.Errorf("serve with %v and no BETTER_AUTH_URL: got %v, want a refusal naming BETTER_AUTH_URL and DEV_AUTH", env, err)
		}
	}

	t.Run("DevAuthTrue", func(t *testing.T) {
		ts := startServer(t, "postgres", map[string]string{"BETTER_AUTH_URL": "", "DEV_AUTH": "true"})
		if ts.srv.issuer == nil {
			t.Fatal("no dev issuer with DEV_AUTH=true")
		}
	})

	// The start-up log names the mode.
	for _, tt := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{}, "auth=dev-issuer"},
		{map[string]string{"BETTER_AUTH_URL": "https://auth.example"}, "auth=better-auth"},
	} {
		tt.env["DATA_DIR"] = t.TempDir()
		tt.env["PORT"] = "0"
		var log syncBuffer
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- Run(ctx, []string{"serve"}, getenv(tt.env), io.Discard, &log) }()
		deadline := time.Now().Add(30 * time.Second)
		for !strings.Contains(log.String(), "msg=serving") && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(log.String(), tt.want) {
			t.Errorf("start-up log with %v lacks %q:\n%s", tt.env, tt.want, log.String())
		}
	}
}

// TestDevIssuerListensOnLoopback: with no HOST, dev mode listens on 127.0.0.1
// only (it used to listen on every interface: the dev sign-in open to the LAN);
// HOST set, or Better Auth, keeps the address asked for.
func TestDevIssuerListensOnLoopback(t *testing.T) {
	var lan net.IP
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if ip, ok := a.(*net.IPNet); ok && !ip.IP.IsLoopback() && ip.IP.To4() != nil {
			lan = ip.IP
			break
		}
	}
	if lan == nil {
		t.Skip("no non-loopback IPv4 address to try")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	vars := map[string]string{"DATA_DIR": t.TempDir(), "PORT": port}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, []string{"serve"}, getenv(vars), io.Discard, io.Discard) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := http.Get("http://127.0.0.1:" + port + "/health")
		if err == nil {
			res.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dev server not listening on 127.0.0.1:%s: %v", port, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if c, err := net.DialTimeout("tcp", net.JoinHostPort(lan.String(), port), 2*time.Second); err == nil {
		c.Close()
		t.Errorf("dev server reachable on %s:%s; want loopback only", lan, port)
	}

	for _, tt := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{}, "127.0.0.1"},
		{map[string]string{"HOST": "0.0.0.0"}, "0.0.0.0"},
		{map[string]string{"BETTER_AUTH_URL": "https://auth.example"}, ""},
		{map[string]string{"BETTER_AUTH_URL": "https://auth.example", "HOST": "10.0.0.1"}, "10.0.0.1"},
	} {
		cfg, err := LoadConfig(getenv(tt.env))
		if err != nil {
			t.Fatal(err)
		}
		if got := cfg.listenHost(); got != tt.want {
			t.Errorf("%v: listens on %q, want %q", tt.env, got, tt.want)
		}
	}
}
