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
	"os"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/evotodo/evo/app/auth"
	"github.com/evotodo/evo/store"
)

// Version is the build's version: set with -ldflags "-X github.com/evotodo/evo/app.Version=..."
// (make build sets `git describe`), else read from the build's VCS stamp (buildVersion). The
// version command, MCP serverInfo, OpenAPI info.version and the metrics all say it.
var Version string

func init() {
	if Version == "" {
		bi, _ := debug.ReadBuildInfo()
		Version = buildVersion(bi)
	}
}

// buildVersion is the version of a build without -ldflags: the module's version when
// it is a release (`go install ...@v1.2.3`, or a build of a tagged commit), else
// "dev+<revision>" (12 hex digits, "-dirty" with uncommitted changes) from the VCS
// stamp of `go build` and `go run` in a clone (not a pseudo-version such as
// v0.0.0-20260102150405-abcdefabcdef), else "dev".
func buildVersion(bi *debug.BuildInfo) string {
	if bi == nil {
		return "dev"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" && !pseudoVersion.MatchString(v) {
		return v
	}
	var rev string
	var dirty bool
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return "dev"
	}
	v := "dev+" + rev[:min(12, len(rev))]
	if dirty {
		v += "-dirty"
	}
	return v
}

// pseudoVersion matches Go's pseudo-versions (a commit, not a release).
var pseudoVersion = regexp.MustCompile(`[-.][0-9]{14}-[0-9a-f]{12}(\+dirty)?$`)

const usage = `usage: evo [command] [flags]

commands:
  serve              run the server (the default)
  migrate            apply the database migrations and exit
  version            print the version
  token --email E    print a dev token for E (creating the user); dev mode only
        [--name N] [--ttl 1h]
  mcp --token JWT    serve the todo tools over MCP on stdio as the token's user (or EVO_TOKEN; dev mode: --email E)

evo help COMMAND (or evo COMMAND --help) describes a command.
Configuration comes from the environment and ./.env; see .env.example.
`

// commandUsage is each command's --help text (token's and mcp's flags follow it).
var commandUsage = map[string]string{
	"serve": `usage: evo serve

Runs the server on HOST:PORT until SIGINT or SIGTERM (then shuts down within
SHUTDOWN_TIMEOUT). Configuration comes from the environment and ./.env; see
.env.example and the README's Configuration table.
`,
	"migrate": `usage: evo migrate

Applies the pending database migrations (PostgreSQL with DATABASE_URL, else
SQLite under DATA_DIR), logs each one it applied and the version the database
is at, and exits. serve applies them too.
`,
	"version": `usage: evo version

Prints the version of this build.
`,
	"token": `usage: evo token --email E [--name N] [--ttl 1h]

Dev mode only (no BETTER_AUTH_URL, ENVIRONMENT not production): creates the
user if missing and prints a token for it, nothing else, on stdout. The token
is signed with DATA_DIR's dev signing key and names PUBLIC_URL (default
http://localhost:PORT) as issuer: run it with the server's DATA_DIR, PORT and
PUBLIC_URL (or from the server's directory, with its .env).

flags:
`,
	"mcp": mcpUsage + "\nflags:\n",
}

// Run runs the command in args. It is main's only call, and tests drive the
// whole program through it. A command's --help prints its usage on stdout and
// returns nil; a bad flag or argument is one error, printed by the caller.
func Run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	err := run(ctx, args, getenv, stdout, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	return err
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cmd := "serve"
	if len(args) > 0 {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "help", "-h", "-help", "--help":
		if len(args) > 0 && commandUsage[args[0]] != "" {
			return run(ctx, []string{args[0], "--help"}, getenv, stdout, stderr)
		}
		_, err := fmt.Fprint(stdout, usage)
		return err
	case "serve", "migrate", "version":
		// No flags: parsed for --help, and so that a stray argument is an error.
		if err := newFlagSet(cmd, stdout).parse(args); err != nil {
			return err
		}
	case "mcp", "token":
	default:
		return fmt.Errorf("unknown command %q (evo --help lists the commands)", cmd)
	}
	if cmd == "version" {
		_, err := fmt.Fprintln(stdout, Version)
		return err
	}
	if cmd == "token" {
		// Flags first: --help works whatever the configuration.
		return token(ctx, args, getenv, stdout, stderr)
	}
	cfg, err := LoadConfig(getenv)
	if err != nil {
		return err
	}
	if cmd == "serve" {
		lw := newLogWriter(stderr)
		defer lw.Close()
		stderr = lw
	}
	log := newLogger(cfg, stderr)
	cfg.logNotes(log)
	switch cmd {
	case "serve":
		tuneGC(cfg.GOGC)
		return serve(ctx, cfg, log)
	case "migrate":
		db, err := openStore(ctx, cfg, log)
		if err != nil {
			return err
		}
		return db.Close()
	default: // mcp
		return mcpCommand(ctx, cfg, log, args, getenv, stdout, stderr)
	}
}

// cmdFlags is the flag set of a command: -h and --help print its usage
// (commandUsage, then its flags) on stdout, and nothing else is printed:
// parse errors are returned (parse).
type cmdFlags struct {
	*flag.FlagSet
	stdout io.Writer
}

func newFlagSet(name string, stdout io.Writer) *cmdFlags {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {} // parse prints it, for --help only
	return &cmdFlags{fs, stdout}
}

// parse parses args: flag.ErrHelp after printing the usage for --help (Run
// then returns nil), an error naming the command for a bad flag or a stray
// argument.
func (f *cmdFlags) parse(args []string) error {
	err := f.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(f.stdout, commandUsage[f.Name()])
		f.SetOutput(f.stdout)
		f.PrintDefaults()
		return err
	case err != nil:
		return fmt.Errorf("%s: %w (see evo %s --help)", f.Name(), err, f.Name())
	case f.NArg() > 0:
		return fmt.Errorf("%s: unexpected argument %q (see evo %s --help)", f.Name(), f.Arg(0), f.Name())
	}
	return nil
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

// tuneGC sets the GC target: GOGC (validated by LoadConfig; from .env too), or
// defaultGOGC when it is not set.
func tuneGC(gogc string) {
	switch gogc {
	case "":
		debug.SetGCPercent(defaultGOGC)
	case "off":
		debug.SetGCPercent(-1)
	default:
		if n, err := strconv.Atoi(gogc); err == nil {
			debug.SetGCPercent(n)
		}
	}
}

// issuerHint ends the 401 of a token with the wrong iss or aud: what the
// server expects them to be.
func issuerHint(cfg Config) string {
	if cfg.DevIssuer() {
		return "the dev issuer's URL is PUBLIC_URL, else http://localhost:PORT: run evo token with the server's PORT and PUBLIC_URL"
	}
	return "iss and aud must be BETTER_AUTH_URL"
}

// keyHint ends the 401 of a token signed with a key the server does not
// have. In dev mode that is a token from another DATA_DIR's key: name this
// server's (dev mode only: a production error does not name paths).
func keyHint(cfg Config) string {
	if !cfg.DevIssuer() {
		return ""
	}
	abs, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		abs = cfg.DataDir
	}
	return "dev mode: this server's signing key is in DATA_DIR=" + abs +
		"; evo token run with another DATA_DIR (or from another directory) signs with another key"
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

func token(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("token", stdout)
	email := fs.String("email", "", "the user's email (required)")
	name := fs.String("name", "", "the user's name (default: the email's local part)")
	ttl := time.Hour
	fs.Func("ttl", "how long the token is valid (default 1h)", func(s string) error {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			return errors.New("must be a positive duration such as 1h or 30m")
		}
		ttl = d
		return nil
	})
	if err := fs.parse(args); err != nil {
		return err
	}
	cfg, err := LoadConfig(getenv)
	if err != nil {
		return err
	}
	if *email == "" {
		return errors.New("token: --email is required (see evo token --help)")
	}
	// The checks of POST /api/dev/token.
	e, n, err := devUser(*email, *name)
	if err != nil {
		var se *store.Error
		if errors.As(err, &se) {
			return fmt.Errorf("token: --%s: %s", se.Field, se.Message)
		}
		return err
	}
	if !cfg.DevIssuer() {
		return errors.New("token: the dev issuer is off (BETTER_AUTH_URL is set, or ENVIRONMENT=production); get tokens from Better Auth")
	}
	db, err := openStore(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	defer db.Close()
	u, err := db.EnsureUser(ctx, e, n)
	if err != nil {
		return err
	}
	keyPath := devKeyPath(cfg)
	_, statErr := os.Stat(keyPath)
	iss, err := auth.LoadIssuer(devIssuerURL(cfg, cfg.Port), keyPath)
	if err != nil {
		return err
	}
	if errors.Is(statErr, os.ErrNotExist) {
		// A token from a key no server has: say so, or the server's 401 is a puzzle.
		abs, _ := filepath.Abs(cfg.DataDir)
		fmt.Fprintf(stderr, "evo token: warning: created a new dev signing key in DATA_DIR=%s; "+
			"only a server started with this DATA_DIR accepts the token (run evo token with the server's DATA_DIR, or from its directory)\n", abs)
	}
	tok, err := iss.Token(u, ttl)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, tok)
	return err
}
