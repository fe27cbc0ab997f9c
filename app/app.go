// Package app is Evo's composition root: configuration, wiring, the Fiber
// app and its handlers, auth, and the mapping of errors to HTTP.
package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/evotodo/evo/app/auth"
)

// Version is the build's version, set with -ldflags "-X github.com/evotodo/evo/app.Version=...".
var Version = "dev"

const usage = `usage: evo [command] [flags]

commands:
  serve              run the server (the default)
  migrate            apply the database migrations and exit
  version            print the version
  token --email E    print a dev token for E (creating the user); dev mode only
        [--name N] [--ttl 1h]
  mcp --token JWT    serve the todo tools over MCP on stdio as the token's user (or EVO_TOKEN; dev mode: --email E)

Configuration comes from the environment and ./.env; see .env.example.
`

// Run runs the command in args. It is main's only call, and tests drive the
// whole program through it.
func Run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cmd := "serve"
	if len(args) > 0 {
		cmd, args = args[0], args[1:]
	}
	cfg, err := LoadConfig(getenv)
	if err != nil {
		return err
	}
	log := newLogger(cfg, stderr)
	switch cmd {
	case "serve":
		tuneGC(getenv)
		return serve(ctx, cfg, log)
	case "migrate":
		db, err := openStore(ctx, cfg, log)
		if err != nil {
			return err
		}
		return db.Close()
	case "mcp":
		return mcpCommand(ctx, cfg, log, args, getenv, stdout, stderr)
	case "token":
		return token(ctx, cfg, log, args, stdout, stderr)
	case "version":
		_, err := fmt.Fprintln(stdout, Version)
		return err
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", cmd)
}

func newLogger(cfg Config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: slog.LevelInfo}
	if cfg.Debug {
		opts.Level = slog.LevelDebug
	}
	if cfg.Production() {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// defaultGOGC is the garbage collector's target (GOGC) of `evo serve` when the
// environment sets none. At Go's default, 100, a fresh replica (a small heap) collects
// several times a second at 1,000 requests/s, and the collections show in the latency
// tail (bench/README.md: shape a p99 7.6-14.7 ms at 100, 5.2-5.3 ms at 150); 150 still
// keeps an idle socket under 40 KB of memory (36.5 KB; 200: 41.5 KB).
const defaultGOGC = 150

// tuneGC sets the GC target to defaultGOGC unless GOGC is set.
func tuneGC(getenv func(string) string) {
	if getenv("GOGC") == "" {
		debug.SetGCPercent(defaultGOGC)
	}
}

func serve(ctx context.Context, cfg Config, log *slog.Logger) error {
	ln, err := net.Listen("tcp", net.JoinHostPort(cfg.listenHost(), strconv.Itoa(cfg.Port)))
	if err != nil {
		return fmt.Errorf("listen (HOST, PORT): %w", err)
	}
	s, err := NewServer(ctx, cfg, log, ln.Addr().(*net.TCPAddr).Port)
	if err != nil {
		ln.Close()
		return err
	}
	return s.Serve(ctx, ln)
}

func token(ctx context.Context, cfg Config, log *slog.Logger, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	email := fs.String("email", "", "the user's email (required)")
	name := fs.String("name", "", "the user's name (default: the email's local part)")
	ttl := fs.Duration("ttl", time.Hour, "how long the token is valid")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *email == "" {
		return errors.New("token: --email is required")
	}
	if !cfg.DevIssuer() {
		return errors.New("token: the dev issuer is off (BETTER_AUTH_URL is set, or ENVIRONMENT=production); get tokens from Better Auth")
	}
	if *name == "" {
		*name, _, _ = strings.Cut(*email, "@")
	}
	db, err := openStore(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	defer db.Close()
	u, err := db.EnsureUser(ctx, *email, *name)
	if err != nil {
		return err
	}
	iss, err := auth.LoadIssuer(devIssuerURL(cfg, cfg.Port), devKeyPath(cfg))
	if err != nil {
		return err
	}
	tok, err := iss.Token(u, *ttl)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, tok)
	return err
}
