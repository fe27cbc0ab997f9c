package app

import (
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/evotodo/evo/store/storetest"
)

// hangProxy is a TCP proxy in front of the real PostgreSQL that can be switched
// to swallow every byte: the server then still accepts connections but never
// answers, like a PostgreSQL stuck on a full disk, a lock or a dead network path.
type hangProxy struct {
	ln     net.Listener
	target string
	hung   atomic.Bool
	mu     sync.Mutex
	conns  []net.Conn
	stuck  []net.Conn // connections that swallowed bytes: reset when the database answers again
}

// hang switches the proxy to swallowing (true) or back to forwarding. Back to
// forwarding, the connections that swallowed bytes are reset, as a database that
// was restarted or came back would (pgx's cancel requests wait on them otherwise).
func (p *hangProxy) hang(on bool) {
	p.hung.Store(on)
	if on {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.stuck {
		c.Close()
	}
	p.stuck = nil
}

// newHangProxy proxies to the PostgreSQL of pgURL and returns pgURL pointed at
// the proxy.
func newHangProxy(t testing.TB, pgURL string) (*hangProxy, string) {
	t.Helper()
	u, err := url.Parse(pgURL)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &hangProxy{ln: ln, target: u.Host}
	t.Cleanup(p.close)
	go p.serve()
	u.Host = ln.Addr().String()
	return p, u.String()
}

func (p *hangProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.track(c)
		if p.hung.Load() {
			p.stick(c)
			go io.Copy(io.Discard, c) // accepted, never answered
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.track(up)
		// Once a connection has swallowed a byte it never forwards again:
		// its protocol state is lost, as after a real hang.
		var poisoned atomic.Bool
		pipe := func(dst, src net.Conn) {
			buf := make([]byte, 32<<10)
			for {
				n, err := src.Read(buf)
				if n > 0 {
					if p.hung.Load() && !poisoned.Swap(true) {
						p.stick(c)
						p.stick(up)
					}
					if !poisoned.Load() {
						if _, err := dst.Write(buf[:n]); err != nil {
							return
						}
					}
				}
				if err != nil {
					dst.Close()
					src.Close()
					return
				}
			}
		}
		go pipe(up, c)
		go pipe(c, up)
	}
}

func (p *hangProxy) track(c net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.conns = append(p.conns, c)
}

func (p *hangProxy) stick(c net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stuck = append(p.stuck, c)
}

func (p *hangProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
}

// TestHungDatabase: a PostgreSQL that accepts connections but stops answering
// costs a request DB_TIMEOUT, not REQUEST_TIMEOUT: REST reads and writes answer
// 503 unavailable, /ready says the database is unreachable, and once PostgreSQL
// answers again the same server serves again, without a restart.
func TestHungDatabase(t *testing.T) {
	proxy, pgURL := newHangProxy(t, storetest.PostgresURL(t))
	ts := startServer(t, "postgres", map[string]string{"DATABASE_URL": pgURL, "DB_TIMEOUT": "1s", "REQUEST_TIMEOUT": "30s"})
	u, tok := ts.user(t)
	if status, body := ts.do(t, "POST", "/api/todos", tok, map[string]string{"title": "before"}); status != http.StatusCreated {
		t.Fatalf("create before the hang: %d %s", status, body)
	}

	proxy.hang(true)
	for _, req := range []struct {
		method, path string
		body         any
	}{
		{"GET", "/api/todos", nil},
		{"POST", "/api/todos", map[string]string{"title": "during"}},
		{"GET", "/api/chat/" + u.ID, nil},
	} {
		start := time.Now()
		status, body := ts.do(t, req.method, req.path, tok, req.body)
		took := time.Since(start)
		t.Logf("%s %s with the database hung: %d after %v", req.method, req.path, status, took.Round(time.Millisecond))
		got := decode[ErrorBody](t, body)
		// Generous: DB_TIMEOUT is 1s (a request may make two bounded calls);
		// REQUEST_TIMEOUT, what a hang used to cost, is 30s.
		if status != http.StatusServiceUnavailable || got.Code != "unavailable" || took > 10*time.Second {
			t.Errorf("%s %s with the database hung: %d %s after %v; want 503 unavailable within a few DB_TIMEOUTs",
				req.method, req.path, status, body, took.Round(time.Millisecond))
		}
	}
	status, body := ts.do(t, "GET", "/ready", "", nil)
	ready := decode[struct {
		Checks map[string]string `json:"checks"`
	}](t, body)
	if status != http.StatusServiceUnavailable || ready.Checks["database"] != "unreachable" {
		t.Errorf("/ready with the database hung: %d %s, want 503 naming the database", status, body)
	}

	proxy.hang(false)
	recovering := time.Now()
	deadline := time.Now().Add(30 * time.Second)
	for {
		status, body := ts.do(t, "POST", "/api/todos", tok, map[string]string{"title": "after"})
		if status == http.StatusCreated {
			t.Logf("serving again %v after the database answered again", time.Since(recovering).Round(time.Millisecond))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("30s after the database answers again: %d %s", status, body)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if status, body := ts.do(t, "GET", "/ready", "", nil); status != http.StatusOK {
		t.Errorf("/ready after recovery: %d %s", status, body)
	}
}
