package app

import (
	"net/http"
	"strings"
	"testing"

	"github.com/fasthttp/websocket"
)

// TestOriginMatcher: CORS_ORIGINS entries and request origins compare in one
// normal form; a wildcard matches subdomains only, and an Origin that is not
// a bare origin never matches.
func TestOriginMatcher(t *testing.T) {
	m := newOriginMatcher([]string{"HTTPS://App.Example.com/", "http://localhost:3000", "https://*.example.org", "https://api.example.net:443"})
	for origin, want := range map[string]bool{
		"https://app.example.com":       true,
		"https://APP.example.com":       true,
		"https://app.example.com:443":   true,
		"http://app.example.com":        false, // another scheme
		"https://app.example.com:8443":  false,
		"http://localhost:3000":         true,
		"http://localhost:3001":         false,
		"https://a.example.org":         true,
		"https://a.b.example.org":       true,
		"https://example.org":           false, // the wildcard is for subdomains
		"https://evilexample.org":       false,
		"http://a.example.org":          false,
		"https://a.example.org:8443":    false,
		"https://evil.com/.example.org": false, // not an origin
		"https://evil.com?.example.org": false,
		"https://x@a.example.org":       false,
		"https://api.example.net":       true,
		"null":                          false,
		"":                              false,
	} {
		if got := m.allowed(origin); got != want {
			t.Errorf("allowed(%q) = %v, want %v", origin, got, want)
		}
	}
}

// TestCORSPreflightAllowsRequestedHeaders: a preflight from an allowed origin
// may ask for any header (the Python backend's allow_headers=["*"]); one from
// another origin gets no allowance at all.
func TestCORSPreflightAllowsRequestedHeaders(t *testing.T) {
	ts := startServer(t, "sqlite", map[string]string{"CORS_ORIGINS": "HTTPS://App.Example.com/,https://*.example.org"})
	preflight := func(origin string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(http.MethodOptions, ts.URL+"/api/todos", nil)
		req.Header.Set("Origin", origin)
		req.Header.Set("Access-Control-Request-Method", "POST")
		req.Header.Set("Access-Control-Request-Headers", "authorization,content-type,x-client-version")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	for _, origin := range []string{"https://app.example.com", "https://tenant.example.org"} {
		resp := preflight(origin)
		h := resp.Header
		if resp.StatusCode != http.StatusNoContent || h.Get("Access-Control-Allow-Origin") != origin ||
			h.Get("Access-Control-Allow-Credentials") != "true" ||
			!strings.Contains(h.Get("Access-Control-Allow-Headers"), "x-client-version") ||
			!strings.Contains(h.Get("Access-Control-Allow-Methods"), "POST") {
			t.Errorf("allowed %s: got %d %v, want 204 allowing it with its headers", origin, resp.StatusCode, h)
		}
	}
	for _, origin := range []string{"https://evil.example", "https://example.org"} {
		h := preflight(origin).Header
		for _, name := range []string{"Access-Control-Allow-Origin", "Access-Control-Allow-Credentials", "Access-Control-Allow-Headers", "Access-Control-Allow-Methods"} {
			if v := h.Get(name); v != "" {
				t.Errorf("disallowed %s: got %s: %q, want none", origin, name, v)
			}
		}
	}
	// A simple request from an allowed origin gets its Allow-Origin too.
	_, tok := ts.user(t)
	resp, _ := roundTrip(t, ts, http.MethodGet, "/api/todos", tok, nil, map[string]string{"Origin": "https://app.example.com"})
	if got := resp.Header.Get("Access-Control-Allow-Origin"); resp.StatusCode != http.StatusOK || got != "https://app.example.com" {
		t.Errorf("GET from an allowed origin: got %d, Allow-Origin %q", resp.StatusCode, got)
	}
}

// TestWSOriginMatchesCORS: the WebSocket origin check takes what CORS takes,
// an entry with a trailing slash and upper case and a wildcard included, and
// refuses what CORS refuses.
func TestWSOriginMatchesCORS(t *testing.T) {
	ts := startServer(t, "sqlite", map[string]string{"CORS_ORIGINS": "HTTP://App.Example/,https://*.example.org"})
	_, tok := ts.user(t)
	dial := func(origin string) int {
		t.Helper()
		h := http.Header{"Authorization": {"Bearer " + tok}, "Origin": {origin}}
		conn, resp, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(ts.URL, "http")+"/ws", h)
		if err == nil {
			conn.Close()
		}
		if resp == nil {
			t.Fatalf("dial with Origin %s: %v", origin, err)
		}
		return resp.StatusCode
	}
	for origin, want := range map[string]int{
		"http://app.example":         http.StatusSwitchingProtocols,
		"https://tenant.example.org": http.StatusSwitchingProtocols,
		"https://evil.example":       http.StatusForbidden,
		"https://example.org":        http.StatusForbidden,
	} {
		if got := dial(origin); got != want {
			t.Errorf("Origin %s: got %d, want %d", origin, got, want)
		}
	}
}
