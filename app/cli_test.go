package app

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/evotodo/evo/store/storetest"
)

// runCLI runs `evo args...` with env (on top of a fresh DATA_DIR and
// ENVIRONMENT=test) and returns its error, stdout and stderr.
func runCLI(t *testing.T, env map[string]string, args ...string) (error, string, string) {
	t.Helper()
	vars := map[string]string{"ENVIRONMENT": "test", "DATA_DIR": t.TempDir()}
	for k, v := range env {
		vars[k] = v
	}
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := Run(ctx, args, getenv(vars), &stdout, &stderr)
	return err, stdout.String(), stderr.String()
}

// TestCLIHelp: --help and -h print the command's usage on stdout and succeed,
// for every command: serve does not start, migrate touches no database.
func TestCLIHelp(t *testing.T) {
	for _, cmd := range []string{"serve", "migrate", "mcp", "token", "version"} {
		for _, flag := range []string{"--help", "-h"} {
			t.Run(cmd+flag, func(t *testing.T) {
				// A DATABASE_URL nothing listens on: --help must not connect.
				err, stdout, stderr := runCLI(t, map[string]string{"DATABASE_URL": "postgres://nobody@127.0.0.1:1/none"}, cmd, flag)
				if err != nil {
					t.Fatalf("got error %v, want none", err)
				}
				if !strings.HasPrefix(stdout, "usage: evo "+cmd) || stderr != "" {
					t.Fatalf("got stdout %q, stderr %q; want the usage on stdout only", stdout, stderr)
				}
			})
		}
	}
	t.Run("TokenListsItsFlags", func(t *testing.T) {
		_, stdout, _ := runCLI(t, nil, "help", "token")
		for _, want := range []string{"-email", "-name", "-ttl"} {
			if !strings.Contains(stdout, want) {
				t.Errorf("evo help token: %q lacks %s", stdout, want)
			}
		}
	})
	t.Run("Top", func(t *testing.T) {
		for _, args := range [][]string{{"help"}, {"--help"}, {"-h"}} {
			err, stdout, _ := runCLI(t, nil, args...)
			if err != nil || !strings.Contains(stdout, "commands:") {
				t.Errorf("evo %s: got %v, %q", args[0], err, stdout)
			}
		}
	})
}

// TestCLIErrors: a bad command line is one error (main prints it once)
// naming the command, with nothing printed besides it.
func TestCLIErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"token", "--email", "a@example.com", "--ttl", "5"}, `token: invalid value "5" for flag -ttl: must be a positive duration such as 1h`},
		{[]string{"token", "--email", "a@example.com", "--ttl", "-1h"}, "must be a positive duration"},
		{[]string{"token", "--user", "x"}, "token: flag provided but not defined: -user"},
		{[]string{"token"}, "token: --email is required"},
		{[]string{"serve", "--port", "80"}, "serve: flag provided but not defined: -port"},
		{[]string{"serve", "now"}, `serve: unexpected argument "now"`},
		{[]string{"migrate", "up"}, `migrate: unexpected argument "up"`},
		{[]string{"version", "--short"}, "version: flag provided but not defined"},
		{[]string{"mcp", "--user", "x"}, "mcp: flag provided but not defined: -user"},
		{[]string{"mcp"}, "--token JWT (or EVO_TOKEN) is required"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			err, stdout, stderr := runCLI(t, nil, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("got %v, want one line containing %q", err, tc.want)
			}
			if stdout != "" || stderr != "" {
				t.Fatalf("printed stdout %q, stderr %q besides the error", stdout, stderr)
			}
		})
	}
}

// TestCLITokenValidatesLikeTheAPI: evo token refuses what POST /api/dev/token
// refuses, with the API's words.
func TestCLITokenValidatesLikeTheAPI(t *testing.T) {
	ts := startServer(t, "sqlite", map[string]string{"BETTER_AUTH_URL": ""})
	for _, tc := range []struct{ email, name string }{
		{"notanemail", ""},
		{"Ada <ada@example.com>", ""},
		{"ada@example.com", strings.Repeat("n", 101)},
		{"ada@example.com", "bad\x01name"},
	} {
		status, body := ts.do(t, http.MethodPost, "/api/dev/token", "", map[string]string{"email": tc.email, "name": tc.name})
		api := decode[ErrorBody](t, body)
		if status != http.StatusUnprocessableEntity {
			t.Fatalf("API %q %q: got %d %s, want 422", tc.email, tc.name, status, body)
		}
		err, stdout, _ := runCLI(t, nil, "token", "--email", tc.email, "--name", tc.name)
		if err == nil || !strings.Contains(err.Error(), "--"+api.Field+": "+api.Detail) || stdout != "" {
			t.Errorf("evo token --email %q --name %q: got %v (stdout %q), want the API's %q on --%s", tc.email, tc.name, err, stdout, api.Detail, api.Field)
		}
	}
}

// TestCLIMigrate: evo migrate says what it applied, and when there was
// nothing to apply, the version the database is at.
func TestCLIMigrate(t *testing.T) {
	version := regexp.MustCompile(`version=(\d+)`)
	for _, b := range backends {
		t.Run(b, func(t *testing.T) {
			env := map[string]string{"DATA_DIR": t.TempDir()}
			if b == "postgres" {
				env["DATABASE_URL"] = storetest.PostgresURL(t)
			}
			err, _, stderr := runCLI(t, env, "migrate")
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(stderr, "migration applied") || !strings.Contains(stderr, "database schema migrated") {
				t.Fatalf("first migrate: stderr %q, want the migrations applied", stderr)
			}
			m := version.FindAllStringSubmatch(stderr, -1)
			latest := m[len(m)-1][1]
			err, _, stderr = runCLI(t, env, "migrate")
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(stderr, "database schema up to date") || !strings.Contains(stderr, "version="+latest) ||
				strings.Contains(stderr, "migration applied") {
				t.Fatalf("second migrate: stderr %q, want up to date at version %s", stderr, latest)
			}
		})
	}
}

// TestCLITokenWarnsWhenItCreatesAKey: a token signed with a key made just
// now, in a DATA_DIR no server may use, says so on stderr (once).
func TestCLITokenWarnsWhenItCreatesAKey(t *testing.T) {
	dir := t.TempDir()
	env := map[string]string{"DATA_DIR": dir}
	err, stdout, stderr := runCLI(t, env, "token", "--email", "a@example.com")
	if err != nil || strings.Count(stdout, ".") != 2 {
		t.Fatalf("got %v, stdout %q", err, stdout)
	}
	if !strings.Contains(stderr, "created a new dev signing key in DATA_DIR="+dir) {
		t.Fatalf("stderr %q, want a warning naming DATA_DIR=%s", stderr, dir)
	}
	if err, _, stderr = runCLI(t, env, "token", "--email", "a@example.com"); err != nil || stderr != "" {
		t.Fatalf("second token: got %v, stderr %q; want no warning", err, stderr)
	}
}

// TestCLIDevTokenMismatchSaysWhatToDo: the 401s of the dev issuer's two usual
// mistakes name what differs and the variable to set.
func TestCLIDevTokenMismatchSaysWhatToDo(t *testing.T) {
	ts := startServer(t, "sqlite", map[string]string{"BETTER_AUTH_URL": ""})
	t.Run("OtherPort", func(t *testing.T) {
		err, tok, _ := runCLI(t, map[string]string{"DATA_DIR": ts.srv.cfg.DataDir, "PORT": "1"}, "token", "--email", "a@example.com")
		if err != nil {
			t.Fatal(err)
		}
		status, body := ts.do(t, http.MethodGet, "/api/todos", strings.TrimSpace(tok), nil)
		want := `invalid token issuer: got iss "http://localhost:1", want "` + ts.srv.issuer.URL + `"`
		detail := decode[ErrorBody](t, body).Detail
		if status != http.StatusUnauthorized || !strings.Contains(detail, want) ||
			!strings.Contains(detail, "PUBLIC_URL") || !strings.Contains(detail, "PORT") {
			t.Fatalf("got %d %q, want 401 with %q naming PUBLIC_URL and PORT", status, detail, want)
		}
	})
	t.Run("OtherDataDir", func(t *testing.T) {
		port := strings.TrimPrefix(ts.srv.issuer.URL, "http://localhost:")
		err, tok, _ := runCLI(t, map[string]string{"PORT": port}, "token", "--email", "a@example.com")
		if err != nil {
			t.Fatal(err)
		}
		status, body := ts.do(t, http.MethodGet, "/api/todos", strings.TrimSpace(tok), nil)
		abs, _ := filepath.Abs(ts.srv.cfg.DataDir)
		detail := decode[ErrorBody](t, body).Detail
		if status != http.StatusUnauthorized || !strings.Contains(detail, "signing key not found") || !strings.Contains(detail, "DATA_DIR="+abs) {
			t.Fatalf("got %d %q, want 401 naming DATA_DIR=%s", status, detail, abs)
		}
	})
}

// TestVersion: without -ldflags the version comes from the build info, and
// evo version, MCP serverInfo, OpenAPI info.version and /docs all say it.
func TestVersion(t *testing.T) {
	for _, tc := range []struct {
		name string
		bi   *debug.BuildInfo
		want string
	}{
		{"NoBuildInfo", nil, "dev"},
		{"NoVCS", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, "dev"},
		{"Module", &debug.BuildInfo{Main: debug.Module{Version: "v1.4.0"}}, "v1.4.0"},
		{"ModuleDirty", &debug.BuildInfo{Main: debug.Module{Version: "v1.4.0+dirty"}}, "v1.4.0+dirty"},
		{"PseudoVersionUsesTheRevision", &debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20261203175503-97f81c8e63b7+dirty"},
			Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "97f81c8e63b73309fd22700dcadc0e79ef7c884e"}, {Key: "vcs.modified", Value: "true"}}}, "dev+97f81c8e63b7-dirty"},
		{"PseudoVersionAfterATag", &debug.BuildInfo{Main: debug.Module{Version: "v1.4.1-0.20261203175503-97f81c8e63b7"},
			Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "97f81c8e63b73309fd22700dcadc0e79ef7c884e"}}}, "dev+97f81c8e63b7"},
		{"Clean", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "5e092b4c0ffee1234567890abcdef1234567890a"}, {Key: "vcs.modified", Value: "false"}}}, "dev+5e092b4c0ffe"},
		{"Dirty", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "5e092b4c0ffee1234567890abcdef1234567890a"}, {Key: "vcs.modified", Value: "true"}}}, "dev+5e092b4c0ffe-dirty"},
	} {
		if got := buildVersion(tc.bi); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}

	if Version == "" {
		t.Fatal("Version is empty")
	}
	err, stdout, _ := runCLI(t, nil, "version")
	if err != nil || stdout != Version+"\n" {
		t.Fatalf("evo version: got %v, %q, want %q", err, stdout, Version)
	}
	ts := startServer(t, "sqlite", nil)
	_, body := ts.do(t, http.MethodGet, "/openapi.json", "", nil)
	var doc struct {
		Info struct{ Version string } `json:"info"`
	}
	if err := json.Unmarshal(body, &doc); err != nil || doc.Info.Version != Version {
		t.Errorf("openapi.json info.version: got %q (%v), want %q", doc.Info.Version, err, Version)
	}
	if _, page := ts.do(t, http.MethodGet, "/docs", "", nil); !strings.Contains(string(page), "API "+Version+"</title>") {
		t.Errorf("/docs does not name version %q", Version)
	}

	_, tok := ts.user(t)
	tr, err := transport.NewStreamableHTTP(ts.URL+"/mcp", transport.WithHTTPHeaders(map[string]string{"Authorization": "Bearer " + tok}))
	if err != nil {
		t.Fatal(err)
	}
	c := client.NewClient(tr)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	res, err := c.Initialize(ctx, mcp.InitializeRequest{})
	if err != nil || res.ServerInfo.Version != Version {
		t.Errorf("MCP serverInfo: got %+v (%v), want version %q", res, err, Version)
	}
}

// TestRedocRedirectsToDocs: the Python backend's /redoc address still leads
// to the API documentation.
func TestRedocRedirectsToDocs(t *testing.T) {
	ts := startServer(t, "sqlite", nil)
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(ts.URL + "/redoc")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != "/docs" {
		t.Fatalf("got %d Location %q, want 301 to /docs", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, err = http.Get(ts.URL + "/redoc")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("following the redirect: got %d %s, want the docs page", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
}

// TestConsoleSaysSignedOutBeforeSignIn: the console's first state is a
// neutral "Signed out", not "Offline" (which reads as "the server is down").
func TestConsoleSaysSignedOutBeforeSignIn(t *testing.T) {
	ts := startServer(t, "sqlite", nil)
	_, page := ts.do(t, http.MethodGet, "/", "", nil)
	if !strings.Contains(string(page), `data-state="signedout"`) || !strings.Contains(string(page), `<span id="conn-text">Signed out</span>`) {
		t.Errorf("the page's connection state is not a neutral Signed out")
	}
	_, js := ts.do(t, http.MethodGet, "/app.js", "", nil)
	if !strings.Contains(string(js), "signedout: 'Signed out'") || !strings.Contains(string(js), "setConn('signedout')") {
		t.Errorf("app.js does not go back to Signed out on sign-out")
	}
}
