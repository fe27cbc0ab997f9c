package app

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"

	"github.com/evotodo/evo/agent"
	"github.com/evotodo/evo/app/auth"
	"github.com/evotodo/evo/store"
)

// MCP over streamable HTTP.
//
// mcp-go's StreamableHTTPServer is written for net/http. Rather than bridge
// Fiber to net/http (the adaptor buffers anyway), /mcp feeds its
// transport-agnostic Handle entry with the buffered request and a response
// writer that cannot stream. The server is stateless: every POST is answered
// by one application/json reply, no Mcp-Session-Id is handed out, so any
// replica can serve any request and no sticky sessions are needed. What a
// buffered transport cannot do is keep a GET open as an SSE stream: GET
// answers 405, which the MCP specification allows (the tools send no
// server-initiated messages, so a client loses nothing). Handle applies no
// DNS-rebinding check; none is needed, since every request must carry a
// bearer token, which a rebinding web page cannot have.

// mountMCP serves the todo tools at /mcp, with the bearer auth of the REST
// API: no or an invalid token is a 401 JSON error, an unreachable JWKS a
// 503; the token's user is the one the tools act for.
func (s *Server) mountMCP(app *fiber.App) {
	mcpServer := agent.NewMCPServer(loggedTools(limitedTools(agent.Tools(s.todos), s.writes), s.log), Version,
		server.WithToolHandlerMiddleware(s.metrics.mcpTools))
	h := server.NewStreamableHTTPServer(mcpServer,
		server.WithStateLess(true),
		server.WithDisableStreaming(true),
		server.WithStreamableHTTPLogger(s.log.With(slog.String("component", "mcp"))))
	serve := func(c *fiber.Ctx) error { return serveMCP(c, h) }
	app.Post("/mcp", s.withTimeout, s.authenticate, serve)
	app.Get("/mcp", s.withTimeout, s.authenticate, serve)
	app.Delete("/mcp", s.withTimeout, s.authenticate, serve)
}

// serveMCP hands one authenticated request to h and copies its buffered
// reply to Fiber. Handle is synchronous, so nothing of c outlives it.
func serveMCP(c *fiber.Ctx, h *server.StreamableHTTPServer) error {
	header := http.Header{}
	c.Request().Header.VisitAll(func(k, v []byte) { header.Add(string(k), string(v)) })
	w := &bufferedResponse{header: http.Header{}}
	h.Handle(w, &server.HTTPRequest{
		Method:  c.Method(),
		URL:     &url.URL{Path: c.Path()},
		Header:  header,
		Body:    bytes.Clone(c.Body()),
		Context: agent.WithUser(c.UserContext(), userID(c)),
	})
	for k, vs := range w.header {
		for i, v := range vs {
			if i == 0 {
				c.Set(k, v)
			} else {
				c.Response().Header.Add(k, v)
			}
		}
	}
	switch w.status {
	case 0:
		w.status = http.StatusOK
	case http.StatusMethodNotAllowed:
		c.Set(fiber.HeaderAllow, "POST, DELETE")
	}
	return c.Status(w.status).Send(w.body.Bytes())
}

// bufferedResponse is an mcp-go response writer that keeps the whole reply
// in memory. CanStream is false: mcp-go then answers a POST with a single
// JSON body and a GET with 405.
type bufferedResponse struct {
	header http.Header
	status int
	body   bytes.Buffer
}

var _ server.HTTPResponseWriter = (*bufferedResponse)(nil)

func (w *bufferedResponse) Header() http.Header { return w.header }

func (w *bufferedResponse) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
}

func (w *bufferedResponse) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.body.Write(p)
}

func (w *bufferedResponse) Flush()          {}
func (w *bufferedResponse) CanStream() bool { return false }

// limitedTools makes every tool that writes take one of the user's writes
// (RATE_LIMIT_WRITES, the budget REST writes draw on) before it runs; over
// the limit the call is a rate_limited tool error.
func limitedTools(tools []agent.Tool, l *userLimit) []agent.Tool {
	out := slices.Clone(tools)
	for i, t := range out {
		if t.ReadOnly {
			continue
		}
		out[i].Run = func(ctx context.Context, userID string, args json.RawMessage) (agent.Result, error) {
			if _, err := l.allow(ctx, userID); err != nil {
				return agent.Result{}, err
			}
			return t.Run(ctx, userID, args)
		}
	}
	return out
}

// loggedTools wraps each tool's Run to log what the client is not told:
// internal errors in full, unavailable dependencies, and panics with their
// stack (a panic becomes an internal error).
func loggedTools(tools []agent.Tool, log *slog.Logger) []agent.Tool {
	out := make([]agent.Tool, len(tools))
	for i, t := range tools {
		run := t.Run
		t.Run = func(ctx context.Context, userID string, args json.RawMessage) (r agent.Result, err error) {
			attrs := func() []any {
				return []any{slog.String("tool", t.Name), slog.String("user_id", userID), slog.Any("error", err)}
			}
			defer func() {
				if p := recover(); p != nil {
					err = fmt.Errorf("tool %s panicked: %v", t.Name, p)
					log.Error("tool panicked", append(attrs(), slog.String("stack", string(debug.Stack())))...)
				}
			}()
			r, err = run(ctx, userID, args)
			switch store.ErrorCode(err) {
			case "":
				log.Debug("tool call", attrs()...)
			case store.CodeInternal:
				log.Error("tool failed", attrs()...)
			case store.CodeUnavailable:
				log.Warn("tool failed: dependency unavailable", attrs()...)
			default:
				log.Debug("tool call refused", attrs()...)
			}
			return r, err
		}
		out[i] = t
	}
	return out
}

// MCP over stdio: the mcp command.

const mcpUsage = `usage: evo mcp --token JWT     (or EVO_TOKEN=JWT evo mcp)
       evo mcp --email E       (dev mode only: acts as E, created if missing)

Serves the todo tools over MCP on stdin/stdout, acting as one user.
Nothing but protocol is written to stdout; logs go to stderr.
`

// mcpCommand is the mcp command on the process's stdin.
func mcpCommand(ctx context.Context, cfg Config, log *slog.Logger, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	return runMCP(ctx, cfg, log, args, getenv, os.Stdin, stdout, stderr)
}

// runMCP serves the tools over stdio until stdin ends or ctx is done. With
// a token, every call verifies it again, like every HTTP request does: when
// it expires, calls fail with "unauthorized: token has expired". When stdin
// ends, the requests read are answered first (each call is bounded by
// REQUEST_TIMEOUT), then the command returns (mcp_stdio.go). Changes are
// published with REDIS_URL (stdioTodos).
func runMCP(ctx context.Context, cfg Config, log *slog.Logger, args []string, getenv func(string) string,
	stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("mcp", stdout)
	token := fs.String("token", "", "a bearer JWT for the user (default $EVO_TOKEN)")
	email := fs.String("email", "", "dev mode: act as the user with this email, created if missing")
	name := fs.String("name", "", "dev mode: the name of a user --email creates (default: the email's local part)")
	if err := fs.parse(args); err != nil {
		return err
	}
	if *token == "" && *email == "" {
		*token = strings.TrimSpace(getenv("EVO_TOKEN"))
	}
	switch {
	case *token != "" && *email != "":
		return errors.New("mcp: give --token or --email, not both")
	case *token == "" && *email == "":
		return errors.New("mcp: --token JWT (or EVO_TOKEN) is required; in dev mode --email E works too")
	case *email != "" && !cfg.DevIssuer():
		return errors.New("mcp: --email works only in dev mode (BETTER_AUTH_URL unset, ENVIRONMENT not production); use --token")
	}

	db, err := openStore(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer db.Close()
	todos, release, err := stdioTodos(ctx, cfg, db, log)
	if err != nil {
		return err
	}
	defer release()
	tools := loggedTools(agent.Tools(todos), log)

	var userID string
	opts := []server.ServerOption{server.WithToolHandlerMiddleware(callTimeout(cfg.RequestTimeout))}
	if *email != "" {
		if *name == "" {
			*name, _, _ = strings.Cut(*email, "@")
		}
		u, err := db.EnsureUser(ctx, *email, *name)
		if err != nil {
			return fmt.Errorf("mcp: --email: %w", err)
		}
		userID = u.ID
	} else {
		v, stop, err := mcpVerifier(ctx, cfg, db, log)
		if err != nil {
			return err
		}
		defer stop()
		claims, err := v.Verify(ctx, *token)
		if err != nil {
			return fmt.Errorf("mcp: --token: %w", err)
		}
		userID = claims.UserID
		opts = append(opts, server.WithToolHandlerMiddleware(reverify(v, *token, log)))
	}

	s := server.NewStdioServer(agent.NewMCPServer(tools, Version, opts...))
	s.SetErrorLogger(slog.NewLogLogger(log.Handler(), slog.LevelError))
	log.Info("serving MCP over stdio", slog.String("user_id", userID))
	calls := newStdioCalls()
	in := &drainingStdin{ctx: ctx, in: bufio.NewReader(stdin), calls: calls, wait: cfg.RequestTimeout + time.Second, log: log}
	err = s.Listen(agent.WithUser(ctx, userID), in, &answeringStdout{out: stdout, calls: calls})
	if ctx.Err() != nil {
		return nil // interrupted: a normal end
	}
	return err
}

// reverify checks the token before each tool call and runs the call as its
// user, so an expired token or a deleted user stops the session.
func reverify(v *auth.Verifier, token string, log *slog.Logger) server.ToolHandlerMiddleware {
	return func(next server.ToolHandlerFunc) server.ToolHandlerFunc {
		return func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			claims, err := v.Verify(ctx, token)
			if err != nil {
				if code := store.ErrorCode(err); code != store.CodeUnauthorized {
					log.Warn("verify token", slog.String("tool", req.Params.Name), slog.Any("error", err))
				}
				return agent.ErrorResult(err), nil
			}
			return next(agent.WithUser(ctx, claims.UserID), req)
		}
	}
}

// callTimeout bounds each tool call over stdio with REQUEST_TIMEOUT, as
// withTimeout bounds each HTTP request.
func callTimeout(d time.Duration) server.ToolHandlerMiddleware {
	return func(next server.ToolHandlerFunc) server.ToolHandlerFunc {
		return func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			ctx, cancel := context.WithTimeout(ctx, d)
			defer cancel()
			return next(ctx, req)
		}
	}
}

// mcpVerifier returns the verifier the mcp command checks its token with,
// and a func to release it. In dev mode the server (and its JWKS route) may
// not be running, so the dev issuer's key set is served on a loopback port
// of this process for as long as the command runs: the token still goes
// through the verifier's one path (alg, kid, signature, iss, aud, exp, user).
func mcpVerifier(ctx context.Context, cfg Config, db store.DB, log *slog.Logger) (*auth.Verifier, func(), error) {
	acfg := authConfig(cfg)
	if !cfg.DevIssuer() {
		return auth.NewVerifier(acfg, db, log), func() {}, nil
	}
	iss, err := auth.LoadIssuer(devIssuerURL(cfg, cfg.Port), devKeyPath(cfg))
	if err != nil {
		return nil, nil, err
	}
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, fmt.Errorf("mcp: serve the dev JWKS: %w", err)
	}
	jwks := iss.JWKS()
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Write(jwks)
		}),
		ReadHeaderTimeout: 5 * time.Second,
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	stop := func() {
		srv.Close()
		<-done
	}
	acfg.JWKSURL = "http://" + ln.Addr().String() + "/api/auth/jwks"
	acfg.Issuer, acfg.Audience = iss.URL, iss.URL
	return auth.NewVerifier(acfg, db, log), stop, nil
}
