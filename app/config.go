package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"
	"github.com/joho/godotenv"

	"github.com/evotodo/evo/agent"
)

// Config is every setting of the server, read once from the environment
// (and an optional .env file in the working directory, which the real
// environment overrides). Each field's doc states its variable and default;
// .env.example and the README list them too.
type Config struct {
	// Environment is ENVIRONMENT: "development" (default) or "production".
	// Production requires BETTER_AUTH_URL and never runs the dev issuer.
	Environment string `env:"ENVIRONMENT" envDefault:"development"`
	// Debug is DEBUG: debug-level logs. Default false.
	Debug bool `env:"DEBUG" envDefault:"false"`
	// Host is HOST, the listen address. Default "": all interfaces, but
	// loopback (127.0.0.1) while the server is its own dev issuer.
	Host string `env:"HOST"`
	// Port is PORT. Default 8000; 0 picks a free port.
	Port int `env:"PORT" envDefault:"8000"`
	// PublicURL is PUBLIC_URL: the URL clients reach the server at (behind a
	// load balancer, the balancer's). The dev issuer uses it as iss and aud,
	// so replicas sharing DATA_DIR accept each other's dev tokens. Default:
	// http://localhost:PORT.
	PublicURL string `env:"PUBLIC_URL"`
	// DataDir is DATA_DIR: the SQLite file and the dev signing key. Default ./data.
	DataDir string `env:"DATA_DIR" envDefault:"./data"`
	// DatabaseURL is DATABASE_URL: PostgreSQL. Empty (default): embedded SQLite.
	DatabaseURL string `env:"DATABASE_URL"`
	// DBMaxConns is DB_MAX_CONNS, the PostgreSQL pool size. Default 5 (the
	// seed's pool of 2 plus an overflow of 3).
	DBMaxConns int `env:"DB_MAX_CONNS" envDefault:"5"`
	// DBTimeout is DB_TIMEOUT: the longest one PostgreSQL operation may take
	// (waiting for a pooled connection included); past it the request
	// answers 503 unavailable. Default 2s.
	DBTimeout time.Duration `env:"DB_TIMEOUT" envDefault:"2s"`
	// RedisURL is REDIS_URL: Redis pub/sub fan-out across replicas. Empty
	// (default): in-process fan-out, one replica. redis:// or rediss:// is one
	// Redis; redis+cluster://host:port,host:port (rediss+cluster:// for TLS;
	// any of the cluster's nodes, the rest are discovered) is a Redis Cluster
	// (7.0+), fanning out with sharded pub/sub.
	RedisURL string `env:"REDIS_URL"`
	// RedisPrefix is REDIS_PREFIX: the start of every Redis key and channel
	// name, so that deployments can share a Redis. Default "evo:".
	RedisPrefix string `env:"REDIS_PREFIX" envDefault:"evo:"`
	// BetterAuthURL is BETTER_AUTH_URL: the Better Auth base URL; the JWKS is
	// {BETTER_AUTH_URL}/api/auth/jwks and iss and aud must equal it. Empty
	// outside production: the server is its own dev issuer.
	BetterAuthURL string `env:"BETTER_AUTH_URL"`
	// DevAuth is DEV_AUTH: lets the dev issuer run although DATABASE_URL or
	// REDIS_URL is set (a production-like setup, where it is refused by
	// default: whoever reaches the port can sign in as anyone). Default false.
	DevAuth bool `env:"DEV_AUTH" envDefault:"false"`
	// JWKSCacheLifespan is JWKS_CACHE_LIFESPAN, seconds a fetched key set is
	// trusted before it is fetched again. Default 300.
	JWKSCacheLifespan int `env:"JWKS_CACHE_LIFESPAN" envDefault:"300"`
	// JWKSCacheMaxKeys is JWKS_CACHE_MAX_KEYS, keys kept from a key set. Default 16.
	JWKSCacheMaxKeys int `env:"JWKS_CACHE_MAX_KEYS" envDefault:"16"`
	// JWKSRefreshInterval is JWKS_REFRESH_INTERVAL: the least time between two
	// fetches caused by unknown key ids. Default 10s.
	JWKSRefreshInterval time.Duration `env:"JWKS_REFRESH_INTERVAL" envDefault:"10s"`
	// JWTLeeway is JWT_LEEWAY, the clock skew allowed on exp, nbf and iat. Default 30s.
	JWTLeeway time.Duration `env:"JWT_LEEWAY" envDefault:"30s"`
	// CORSOrigins is CORS_ORIGINS, comma-separated origins (scheme://host[:port],
	// or scheme://*.example.com for every subdomain), normalised: lower case, no
	// trailing slash, no default port. CORS and the WebSocket origin check both
	// match them (cors.go). Default http://localhost:3000.
	CORSOrigins []string `env:"CORS_ORIGINS" envDefault:"http://localhost:3000" envSeparator:","`
	// GOGC is GOGC, the garbage collector's target for `evo serve`: "off" or an
	// integer. Unset: 150 (defaultGOGC), not Go's 100.
	GOGC string `env:"GOGC"`
	// ShutdownTimeout is SHUTDOWN_TIMEOUT: how long a stopping server waits
	// for requests and sockets to finish. Default 10s.
	ShutdownTimeout time.Duration `env:"SHUTDOWN_TIMEOUT" envDefault:"10s"`
	// RequestTimeout is REQUEST_TIMEOUT, the longest a REST request may
	// take. Default 30s.
	RequestTimeout time.Duration `env:"REQUEST_TIMEOUT" envDefault:"30s"`
	// BodyLimit is BODY_LIMIT, the largest request body in bytes. Default 1 MiB.
	BodyLimit int `env:"BODY_LIMIT" envDefault:"1048576"`
	// WSQueueSize is WS_QUEUE_SIZE: frames queued per socket; a socket
	// whose queue is full is closed as slow (3001). Default 1024.
	WSQueueSize int `env:"WS_QUEUE_SIZE" envDefault:"1024"`
	// WSPingInterval is WS_PING_INTERVAL: server pings. Default 25s.
	WSPingInterval time.Duration `env:"WS_PING_INTERVAL" envDefault:"25s"`
	// WSPongTimeout is WS_PONG_TIMEOUT: a socket silent for
	// WS_PING_INTERVAL plus this is dropped. Default 10s.
	WSPongTimeout time.Duration `env:"WS_PONG_TIMEOUT" envDefault:"10s"`
	// WSMaxMessageSize is WS_MAX_MESSAGE_SIZE: largest inbound frame, bytes. Default 65536.
	WSMaxMessageSize int `env:"WS_MAX_MESSAGE_SIZE" envDefault:"65536"`
	// WSMaxConnsPerUser is WS_MAX_CONNS_PER_USER, per replica. Default 32.
	WSMaxConnsPerUser int `env:"WS_MAX_CONNS_PER_USER" envDefault:"32"`
	// WSMaxConns is WS_MAX_CONNS: sockets per replica. Default 20000.
	WSMaxConns int `env:"WS_MAX_CONNS" envDefault:"20000"`
	// WSRateLimit is WS_RATE_LIMIT: inbound frames per second per socket. Default 20.
	WSRateLimit float64 `env:"WS_RATE_LIMIT" envDefault:"20"`
	// WSRateBurst is WS_RATE_BURST: inbound burst per socket. Default 40.
	WSRateBurst int `env:"WS_RATE_BURST" envDefault:"40"`
	// ReplicaID is REPLICA_ID: this replica's name in every socket's hello
	// ("replica"). Default: the host name and port, e.g. "web-1:8000".
	ReplicaID string `env:"REPLICA_ID"`
	// WSGapWait is WS_GAP_WAIT: how long a replica holds a user's events that
	// arrived after a missing seq before its sockets read the event log. Default 1s.
	WSGapWait time.Duration `env:"WS_GAP_WAIT" envDefault:"1s"`
	// EventRetentionCount is EVENT_RETENTION_COUNT: events kept per user for
	// resume. Default 10000.
	EventRetentionCount int `env:"EVENT_RETENTION_COUNT" envDefault:"10000"`
	// EventRetentionAge is EVENT_RETENTION_AGE: events older than this are
	// pruned (each user's newest is always kept). Default 168h (7 days).
	EventRetentionAge time.Duration `env:"EVENT_RETENTION_AGE" envDefault:"168h"`

	// ---- Chat agent: LLM_* chooses the model, CHAT_* bounds the chats
	// (validated by validateChat).

	// LLMProvider is LLM_PROVIDER: "builtin" (the default, also when
	// empty: an offline agent that understands plain todo commands),
	// "openai" (any OpenAI-compatible chat-completions endpoint: OpenAI,
	// vLLM, llama.cpp server, LM Studio, Ollama's /v1) or "ollama".
	LLMProvider string `env:"LLM_PROVIDER"`
	// LLMBaseURL is LLM_BASE_URL: for openai the API base that
	// /chat/completions is appended to (default https://api.openai.com/v1);
	// for ollama the server (default http://localhost:11434). Required in
	// production for both.
	LLMBaseURL string `env:"LLM_BASE_URL"`
	// LLMAPIKey is LLM_API_KEY: the endpoint's bearer key; empty for local
	// servers. Never logged.
	LLMAPIKey string `env:"LLM_API_KEY"`
	// LLMModel is LLM_MODEL: the model name (default gpt-4o-mini for
	// openai, llama3.2 for ollama). Required in production for both.
	LLMModel string `env:"LLM_MODEL"`
	// LLMTimeout is LLM_TIMEOUT: the longest one model call may take,
	// its whole stream included. Default 60s.
	LLMTimeout time.Duration `env:"LLM_TIMEOUT" envDefault:"60s"`
	// ChatMaxSteps is CHAT_MAX_STEPS: model calls per chat message (each
	// round of tool calls takes one more). Default 5.
	ChatMaxSteps int `env:"CHAT_MAX_STEPS" envDefault:"5"`
	// ChatMaxToolCalls is CHAT_MAX_TOOL_CALLS: tool calls run per model
	// step; the model's calls beyond it do not run and get a rate_limited
	// error result. Default 10.
	ChatMaxToolCalls int `env:"CHAT_MAX_TOOL_CALLS" envDefault:"10"`
	// ChatHistory is CHAT_HISTORY: earlier exchanges the model sees as
	// context. Default 10; 0 sends none.
	ChatHistory int `env:"CHAT_HISTORY" envDefault:"10"`
	// ChatRateLimit is CHAT_RATE_LIMIT: chat messages per user per minute
	// (bursts up to it), counted across replicas in Redis when REDIS_URL is
	// set, else per replica. Default 20.
	ChatRateLimit int `env:"CHAT_RATE_LIMIT" envDefault:"20"`

	// ---- Operations: the REST write limit and /metrics (validated by
	// validateOps).

	// RateLimitWrites is RATE_LIMIT_WRITES: writes per user per minute
	// (bursts up to it), REST (POST, PUT, PATCH and DELETE on /api/todos),
	// MCP write tools on /mcp and the chat agent's write tools, counted across replicas in Redis when
	// REDIS_URL is set, else per replica. Default 120.
	RateLimitWrites int `env:"RATE_LIMIT_WRITES" envDefault:"120"`
	// MetricsToken is METRICS_TOKEN: when set, GET /metrics requires
	// "Authorization: Bearer <METRICS_TOKEN>". Empty (default): /metrics is
	// open to whoever reaches the port. Never logged.
	MetricsToken string `env:"METRICS_TOKEN"`

	origins originMatcher // CORSOrigins, for CORS and the WebSocket origin check
	notes   []configNote  // what validation changed or noticed, logged at start-up
}

// configNote is a start-up log line about the configuration (logNotes).
type configNote struct {
	level slog.Level
	msg   string
	attrs []any
}

// logNotes logs what validation changed or noticed.
func (c *Config) logNotes(log *slog.Logger) {
	for _, n := range c.notes {
		log.Log(context.Background(), n.level, n.msg, n.attrs...)
	}
}

// Production reports whether ENVIRONMENT is production.
func (c *Config) Production() bool { return c.Environment == "production" }

// DevIssuer reports whether the server issues its own dev tokens.
func (c *Config) DevIssuer() bool { return c.BetterAuthURL == "" && !c.Production() }

// devIssuerError refuses the dev issuer where a production deployment would
// copy it from: with DATABASE_URL or REDIS_URL set, unless DEV_AUTH is.
func (c *Config) devIssuerError() error {
	if !c.DevIssuer() || c.DevAuth || (c.DatabaseURL == "" && c.RedisURL == "") {
		return nil
	}
	return errors.New("BETTER_AUTH_URL: is required with DATABASE_URL or REDIS_URL: without it the server would be its own dev issuer, " +
		"and anyone who reaches the port could sign in as any user; set BETTER_AUTH_URL (and ENVIRONMENT=production), " +
		"or DEV_AUTH=true for a development setup on PostgreSQL or Redis")
}

// listenHost is the address serve listens on: HOST, or loopback in dev
// issuer mode when HOST is unset (HOST=0.0.0.0 listens on every interface).
func (c *Config) listenHost() string {
	if c.Host == "" && c.DevIssuer() {
		return "127.0.0.1"
	}
	return c.Host
}

// LoadConfig reads the configuration from getenv, falling back to a .env
// file in the working directory, and validates it. Errors name the variable.
func LoadConfig(getenv func(string) string) (Config, error) {
	vars := map[string]string{}
	if dotenv, err := godotenv.Read(".env"); err == nil {
		vars = dotenv
	} else if !errors.Is(err, os.ErrNotExist) {
		return Config{}, fmt.Errorf("read .env: %w", err)
	}
	for _, name := range configVars() {
		if v := getenv(name); v != "" {
			vars[name] = v
		}
	}
	var cfg Config
	if err := env.ParseWithOptions(&cfg, env.Options{Environment: vars}); err != nil {
		return Config{}, parseError(err, vars)
	}
	// validate normalizes cfg: call it before cfg is read for the return.
	err := cfg.validate()
	return cfg, err
}

// parseError names the variable of each value that could not be parsed;
// env's own errors name the Go field instead.
func parseError(err error, vars map[string]string) error {
	var agg env.AggregateError
	if !errors.As(err, &agg) {
		return fmt.Errorf("configuration: %w", err)
	}
	var errs []error
	for _, e := range agg.Errors {
		var pe env.ParseError
		if errors.As(e, &pe) {
			if f, ok := reflect.TypeFor[Config]().FieldByName(pe.Name); ok {
				name := f.Tag.Get("env")
				switch pe.Type {
				case reflect.TypeFor[time.Duration]():
					errs = append(errs, fmt.Errorf("%s: must be a duration such as 30s, got %q", name, vars[name]))
				default:
					errs = append(errs, fmt.Errorf("%s: must be a valid %s, got %q: %w", name, pe.Type, vars[name], pe.Err))
				}
				continue
			}
		}
		errs = append(errs, fmt.Errorf("configuration: %w", e))
	}
	return errors.Join(errs...)
}

// configVars lists the variable names of Config.
func configVars() []string {
	var names []string
	params, _ := env.GetFieldParams(&Config{})
	for _, p := range params {
		names = append(names, p.Key)
	}
	return names
}

func (c *Config) validate() error {
	var errs []error
	bad := func(name, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{name}, args...)...))
	}
	switch c.Environment {
	case "development", "production", "test":
	default:
		bad("ENVIRONMENT", "must be development, production or test, got %q", c.Environment)
	}
	if c.Port < 0 || c.Port > 65535 {
		bad("PORT", "must be between 0 and 65535, got %d", c.Port)
	}
	if c.Production() && c.BetterAuthURL == "" {
		bad("BETTER_AUTH_URL", "is required when ENVIRONMENT=production: the dev issuer never runs in production, and without Better Auth no token can be verified")
	}
	if c.BetterAuthURL != "" {
		u, err := url.Parse(c.BetterAuthURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("BETTER_AUTH_URL", "must be an http(s) URL, got %q", c.BetterAuthURL)
		}
		c.BetterAuthURL = strings.TrimRight(c.BetterAuthURL, "/")
	}
	if c.PublicURL != "" {
		u, err := url.Parse(c.PublicURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("PUBLIC_URL", "must be an http(s) URL, got %q", c.PublicURL)
		}
		c.PublicURL = strings.TrimRight(c.PublicURL, "/")
	}
	if c.DatabaseURL != "" {
		c.validateDatabaseURL(bad)
	}
	if c.RedisURL != "" {
		if _, err := redisOptions(c.RedisURL); err != nil {
			bad("REDIS_URL", "%v", err)
		}
	}
	if len(c.RedisPrefix) > 64 || strings.ContainsAny(c.RedisPrefix, "{} \t\r\n") {
		bad("REDIS_PREFIX", "must be at most 64 characters without braces or spaces, got %q", c.RedisPrefix)
	}
	positive := []struct {
		name string
		v    int
	}{
		{"DB_MAX_CONNS", c.DBMaxConns}, {"JWKS_CACHE_LIFESPAN", c.JWKSCacheLifespan},
		{"JWKS_CACHE_MAX_KEYS", c.JWKSCacheMaxKeys}, {"BODY_LIMIT", c.BodyLimit},
		{"EVENT_RETENTION_COUNT", c.EventRetentionCount}, {"WS_QUEUE_SIZE", c.WSQueueSize},
		{"WS_MAX_MESSAGE_SIZE", c.WSMaxMessageSize}, {"WS_MAX_CONNS_PER_USER", c.WSMaxConnsPerUser},
		{"WS_MAX_CONNS", c.WSMaxConns}, {"WS_RATE_BURST", c.WSRateBurst}, {"WS_RATE_LIMIT", int(c.WSRateLimit * 1000)},
	}
	for _, p := range positive {
		if p.v <= 0 {
			bad(p.name, "must be positive, got %d", p.v)
		}
	}
	if c.GOGC != "" && c.GOGC != "off" {
		if _, err := strconv.Atoi(c.GOGC); err != nil {
			bad("GOGC", "must be off or an integer (the GC target, percent), got %q", c.GOGC)
		}
	}
	durations := []struct {
		name string
		v    time.Duration
	}{
		{"JWKS_REFRESH_INTERVAL", c.JWKSRefreshInterval}, {"JWT_LEEWAY", c.JWTLeeway + 1},
		{"SHUTDOWN_TIMEOUT", c.ShutdownTimeout}, {"REQUEST_TIMEOUT", c.RequestTimeout}, {"DB_TIMEOUT", c.DBTimeout},
		{"EVENT_RETENTION_AGE", c.EventRetentionAge}, {"WS_PING_INTERVAL", c.WSPingInterval},
		{"WS_PONG_TIMEOUT", c.WSPongTimeout}, {"WS_GAP_WAIT", c.WSGapWait},
	}
	for _, d := range durations {
		if d.v <= 0 {
			bad(d.name, "must be a positive duration such as 30s")
		}
	}
	for i, o := range c.CORSOrigins {
		o = strings.TrimSpace(o)
		n, ok := normalizeOrigin(o, true)
		switch {
		case o == "*":
			bad("CORS_ORIGINS", "must list origins: \"*\" cannot be used with credentials")
		case !ok:
			bad("CORS_ORIGINS", "must list origins such as https://app.example.com or https://*.example.com (scheme and host, no path), got %q", o)
		default:
			o = n
		}
		c.CORSOrigins[i] = o
	}
	c.origins = newOriginMatcher(c.CORSOrigins)
	if c.DataDir != "" {
		c.DataDir = filepath.Clean(c.DataDir)
	}
	errs = append(errs, c.validateChat()...)
	errs = append(errs, c.validateOps()...)
	return errors.Join(errs...)
}

// sqlalchemyDrivers are the driver suffixes of SQLAlchemy's PostgreSQL URLs
// (postgresql+psycopg://... is the Python backend's own form): DATABASE_URL
// takes them and drops the suffix, since pgx is the driver here.
var sqlalchemyDrivers = []string{"psycopg", "psycopg2", "psycopg2cffi", "asyncpg", "pg8000"}

// validateDatabaseURL checks DATABASE_URL and rewrites a SQLAlchemy URL
// (postgresql+psycopg://) to postgres://, noting it for the start-up log.
func (c *Config) validateDatabaseURL(bad func(name, format string, args ...any)) {
	scheme, rest, ok := strings.Cut(c.DatabaseURL, "://")
	if !ok {
		bad("DATABASE_URL", "must be a postgres:// URL such as postgres://user:password@host:5432/evo")
		return
	}
	base, driver, hasDriver := strings.Cut(strings.ToLower(scheme), "+")
	switch {
	case base != "postgres" && base != "postgresql":
		bad("DATABASE_URL", "must be a postgres:// URL such as postgres://user:password@host:5432/evo, got scheme %q", scheme)
	case hasDriver && !slices.Contains(sqlalchemyDrivers, driver):
		bad("DATABASE_URL", "must be a postgres:// URL; of SQLAlchemy's driver suffixes only +%s are taken, got %q",
			strings.Join(sqlalchemyDrivers, ", +"), scheme)
	case hasDriver:
		c.DatabaseURL = "postgres://" + rest
		c.notes = append(c.notes, configNote{slog.LevelInfo,
			"DATABASE_URL: a SQLAlchemy URL; using it as postgres:// (the +" + driver + " driver suffix is dropped)",
			[]any{slog.String("scheme", scheme)}})
	}
}

// validateChat checks the LLM_* and CHAT_* variables.
func (c *Config) validateChat() []error {
	var errs []error
	bad := func(name, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{name}, args...)...))
	}
	c.LLMProvider = strings.ToLower(strings.TrimSpace(c.LLMProvider))
	switch c.LLMProvider {
	case "":
		c.LLMProvider = "builtin"
	case "builtin":
	case "openai", "ollama":
		if c.Production() && c.LLMBaseURL == "" {
			bad("LLM_BASE_URL", "is required when ENVIRONMENT=production and LLM_PROVIDER=%s", c.LLMProvider)
		}
		if c.Production() && c.LLMModel == "" {
			bad("LLM_MODEL", "is required when ENVIRONMENT=production and LLM_PROVIDER=%s", c.LLMProvider)
		}
		// The defaults, here rather than in the agent: the start-up log shows
		// the URL and model in use.
		if c.LLMBaseURL == "" {
			c.LLMBaseURL = map[string]string{"openai": agent.DefaultOpenAIBaseURL, "ollama": agent.DefaultOllamaBaseURL}[c.LLMProvider]
		}
		if c.LLMModel == "" {
			c.LLMModel = map[string]string{"openai": agent.DefaultOpenAIModel, "ollama": agent.DefaultOllamaModel}[c.LLMProvider]
		}
	default:
		bad("LLM_PROVIDER", "must be builtin, openai or ollama, got %q", c.LLMProvider)
	}
	if c.LLMBaseURL != "" {
		u, err := url.Parse(c.LLMBaseURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("LLM_BASE_URL", "must be an http(s) URL such as https://api.openai.com/v1, got %q", c.LLMBaseURL)
		}
		c.LLMBaseURL = strings.TrimRight(c.LLMBaseURL, "/")
		if err == nil && c.LLMProvider == "openai" && c.LLMAPIKey == "" && !localHost(u.Hostname()) {
			c.notes = append(c.notes, configNote{slog.LevelWarn,
				"LLM_API_KEY is not set: a hosted OpenAI-compatible endpoint refuses requests without a key (local servers need none)",
				[]any{slog.String("base_url", c.LLMBaseURL)}})
		}
	}
	if c.LLMTimeout <= 0 {
		bad("LLM_TIMEOUT", "must be a positive duration such as 60s")
	}
	if c.ChatMaxSteps < 1 || c.ChatMaxSteps > 50 {
		bad("CHAT_MAX_STEPS", "must be between 1 and 50, got %d", c.ChatMaxSteps)
	}
	if c.ChatMaxToolCalls < 1 || c.ChatMaxToolCalls > 100 {
		bad("CHAT_MAX_TOOL_CALLS", "must be between 1 and 100, got %d", c.ChatMaxToolCalls)
	}
	if c.ChatHistory < 0 || c.ChatHistory > 100 {
		bad("CHAT_HISTORY", "must be between 0 and 100, got %d", c.ChatHistory)
	}
	if c.ChatRateLimit <= 0 {
		bad("CHAT_RATE_LIMIT", "must be positive, got %d", c.ChatRateLimit)
	}
	return errs
}

// localHost reports whether host is this machine or a private network's
// (a model server that needs no key, such as llama.cpp, vLLM or LM Studio):
// localhost, a loopback or private address, or a name of one label (a
// compose service such as "vllm").
func localHost(host string) bool {
	if host == "localhost" || strings.HasSuffix(host, ".localhost") || (net.ParseIP(host) == nil && !strings.Contains(host, ".")) {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && (ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast())
}

// validateOps checks RATE_LIMIT_WRITES and METRICS_TOKEN.
func (c *Config) validateOps() []error {
	var errs []error
	if c.RateLimitWrites <= 0 {
		errs = append(errs, fmt.Errorf("RATE_LIMIT_WRITES: must be positive, got %d", c.RateLimitWrites))
	}
	if c.MetricsToken != "" && (len(c.MetricsToken) < 16 || strings.ContainsAny(c.MetricsToken, " \t\r\n")) {
		errs = append(errs, errors.New("METRICS_TOKEN: must be at least 16 characters with no spaces (a random string)"))
	}
	return errs
}
