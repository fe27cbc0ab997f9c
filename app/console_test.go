package app

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// consoleGet sends a GET or HEAD without credentials and returns the response,
// its body read and closed.
func consoleGet(t testing.TB, method, url string, header map[string]string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(body)
}

func TestConsoleFiles(t *testing.T) {
	ts := startServer(t, "sqlite", nil)

	t.Run("IndexHasCSP", func(t *testing.T) {
		resp, body := consoleGet(t, http.MethodGet, ts.URL+"/", nil)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /: got %d, want 200: %s", resp.StatusCode, body)
		}
		if got := resp.Header.Get("Content-Type"); got != "text/html; charset=utf-8" {
			t.Errorf("Content-Type: got %q", got)
		}
		csp := resp.Header.Get("Content-Security-Policy")
		host := strings.TrimPrefix(ts.URL, "http://")
		for _, want := range []string{
			"default-src 'none'", "script-src 'self'", "style-src 'self'",
			"connect-src 'self' ws://" + host + " wss://" + host, "frame-ancestors 'none'",
		} {
			if !strings.Contains(csp, want) {
				t.Errorf("Content-Security-Policy %q lacks %q", csp, want)
			}
		}
		if got := resp.Header.Get("X-Content-Type-Options"); got != "nosniff" {
			t.Errorf("X-Content-Type-Options: got %q", got)
		}
		if got := resp.Header.Get("Cache-Control"); got != "no-cache" {
			t.Errorf("Cache-Control: got %q", got)
		}
		if !strings.Contains(body, `<script type="module" src="/app.js">`) {
			t.Error("the page does not load /app.js")
		}
		// BETTER_AUTH_URL is set: the console asks for a token.
		if !strings.Contains(body, `<meta name="evo-sign-in" content="token">`) {
			t.Error(`want sign-in mode "token"`)
		}
	})

	t.Run("ContentTypes", func(t *testing.T) {
		for _, tc := range []struct{ path, ctype, contains string }{
			{"/app.js", "text/javascript; charset=utf-8", "WebSocket"},
			{"/style.css", "text/css; charset=utf-8", ".console"},
			{"/favicon.svg", "image/svg+xml", "<svg"},
		} {
			resp, body := consoleGet(t, http.MethodGet, ts.URL+tc.path, nil)
			if resp.StatusCode != http.StatusOK {
				t.Errorf("GET %s: got %d, want 200", tc.path, resp.StatusCode)
				continue
			}
			if got := resp.Header.Get("Content-Type"); got != tc.ctype {
				t.Errorf("GET %s: Content-Type: got %q, want %q", tc.path, got, tc.ctype)
			}
			if !strings.Contains(body, tc.contains) {
				t.Errorf("GET %s: body lacks %q", tc.path, tc.contains)
			}
		}
	})

	t.Run("NotModified", func(t *testing.T) {
		resp, _ := consoleGet(t, http.MethodHead, ts.URL+"/app.js", nil)
		etag := resp.Header.Get("ETag")
		if etag == "" {
			t.Fatal("no ETag")
		}
		resp, body := consoleGet(t, http.MethodGet, ts.URL+"/app.js", map[string]string{"If-None-Match": etag})
		if resp.StatusCode != http.StatusNotModified || body != "" {
			t.Errorf("If-None-Match %s: got %d with %d bytes, want 304 and none", etag, resp.StatusCode, len(body))
		}
		resp, _ = consoleGet(t, http.MethodGet, ts.URL+"/app.js", map[string]string{"If-None-Match": `"stale"`})
		if resp.StatusCode != http.StatusOK {
			t.Errorf("stale ETag: got %d, want 200", resp.StatusCode)
		}
	})

	t.Run("UnknownFileNotFound", func(t *testing.T) {
		resp, body := consoleGet(t, http.MethodGet, ts.URL+"/nope.js", nil)
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET /nope.js: got %d, want 404: %s", resp.StatusCode, body)
		}
	})

	t.Run("DevTokenNotFoundWithBetterAuth", func(t *testing.T) {
		status, body := ts.do(t, http.MethodPost, "/api/dev/token", "", map[string]string{"email": "ada@example.com"})
		if status != http.StatusNotFound {
			t.Fatalf("got %d, want 404: %s", status, body)
		}
		if got := decode[ErrorBody](t, body); got.Code != "not_found" {
			t.Errorf("got %+v, want code not_found", got)
		}
	})
}

func TestConsoleDevToken(t *testing.T) {
	// No BETTER_AUTH_URL: the server is its own dev issuer.
	ts := startServer(t, "sqlite", map[string]string{"BETTER_AUTH_URL": ""})

	t.Run("OK", func(t *testing.T) {
		status, body := ts.do(t, http.MethodPost, "/api/dev/token", "", map[string]string{"email": "ada@example.com", "name": "Ada"})
		if status != http.StatusOK {
			t.Fatalf("got %d, want 200: %s", status, body)
		}
		got := decode[DevToken](t, body)
		if got.Token == "" || got.User.ID == "" || got.User.Email != "ada@example.com" || got.User.Name != "Ada" {
			t.Fatalf("got %s", body)
		}
		if status, body := ts.do(t, http.MethodGet, "/api/todos", got.Token, nil); status != http.StatusOK {
			t.Errorf("GET /api/todos with the dev token: got %d, want 200: %s", status, body)
		}
		// The same email is the same user; the name defaults to the local part.
		status, body = ts.do(t, http.MethodPost, "/api/dev/token", "", map[string]string{"email": "ada@example.com"})
		if again := decode[DevToken](t, body); status != http.StatusOK || again.User.ID != got.User.ID {
			t.Errorf("second sign-in: got %d %s, want user %s", status, body, got.User.ID)
		}
		_, body = ts.do(t, http.MethodPost, "/api/dev/token", "", map[string]string{"email": "grace@example.com"})
		if u := decode[DevToken](t, body).User; u.Name != "grace" {
			t.Errorf("default name: got %q, want %q", u.Name, "grace")
		}
	})

	t.Run("Invalid", func(t *testing.T) {
		for _, tc := range []struct {
			name   string
			body   any
			status int
			field  string
		}{
			{"ErrEmailRequired", map[string]string{"name": "Ada"}, http.StatusUnprocessableEntity, "email"},
			{"ErrEmailInvalid", map[string]string{"email": "ada"}, http.StatusUnprocessableEntity, "email"},
			{"ErrEmailDisplayName", map[string]string{"email": "Ada <ada@example.com>"}, http.StatusUnprocessableEntity, "email"},
			{"ErrEmailTooLong", map[string]string{"email": strings.Repeat("a", 250) + "@example.com"}, http.StatusUnprocessableEntity, "email"},
			{"ErrNameTooLong", map[string]string{"email": "ada@example.com", "name": strings.Repeat("é", 101)}, http.StatusUnprocessableEntity, "name"},
			{"ErrNameControl", map[string]string{"email": "ada@example.com", "name": "a\nb"}, http.StatusUnprocessableEntity, "name"},
			{"ErrEmailType", `{"email": 7}`, http.StatusUnprocessableEntity, "email"},
			{"ErrMalformed", `{"email":`, http.StatusBadRequest, ""},
		} {
			t.Run(tc.name, func(t *testing.T) {
				status, body := ts.do(t, http.MethodPost, "/api/dev/token", "", tc.body)
				if status != tc.status {
					t.Fatalf("got %d, want %d: %s", status, tc.status, body)
				}
				if got := decode[ErrorBody](t, body); got.Field != tc.field {
					t.Errorf("field: got %q, want %q (%s)", got.Field, tc.field, body)
				}
			})
		}
	})

	t.Run("ErrNotJSON", func(t *testing.T) {
		// A form post (no CORS preflight) is refused.
		resp, err := http.Post(ts.URL+"/api/dev/token", "application/x-www-form-urlencoded", strings.NewReader(`{"email":"ada@example.com"}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("got %d, want 400", resp.StatusCode)
		}
	})

	t.Run("IndexSaysDev", func(t *testing.T) {
		_, body := consoleGet(t, http.MethodGet, ts.URL+"/", nil)
		if !strings.Contains(body, `<meta name="evo-sign-in" content="dev">`) {
			t.Error(`want sign-in mode "dev"`)
		}
	})
}
