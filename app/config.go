package app

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"
	"github.com/joho/godotenv"
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
	// Host is HOST, the listen address. Default "" (all interfaces).
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
	// RedisURL is REDIS_URL: Redis pub/sub fan-out across replicas. Empty
	// (default): in-process fan-out, one replica.
	RedisURL string `env:"REDIS_URL"`
	// BetterAuthURL is BETTER_AUTH_URL: the Better Auth base URL; the JWKS is
	// {BETTER_AUTH_URL}/api/auth/jwks and iss and aud must equal it. Empty
	// outside production: the server is its own dev issuer.
	BetterAuthURL string `env:"BETTER_AUTH_URL"`
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
	// CORSOrigins is CORS_ORIGINS, comma-separated. Default http://localhost:3000.
	CORSOrigins []string `env:"CORS_ORIGINS" envDefault:"http://localhost:3000" envSeparator:","`
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
	// (bursts up to it), REST (POST, PUT, PATCH and DELETE on /api/todos)
	// and MCP write tools on /mcp, counted across replicas in Redis when
	// REDIS_URL is set, else per replica. Default 120.
	RateLimitWrites int `env:"RATE_LIMIT_WRITES" envDefault:"120"`
	// MetricsToken is METRICS_TOKEN: when set, GET /metrics requires
	// "Authorization: Bearer <METRICS_TOKEN>". Empty (default): /metrics is
	// open to whoever reaches the port. Never logged.
	MetricsToken string `env:"METRICS_TOKEN"`
}

// Production reports whether ENVIRONMENT is production.
func (c *Config) Production() bool { return c.Environment == "production" }

// DevIssuer reports whether the server issues its own dev tokens.
func (c *Config) DevIssuer() bool { return c.BetterAuthURL == "" && !c.Production() }

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
				errs = append(errs, fmt.Errorf("%s: must be a valid %s, got %q: %w", name, pe.Type, vars[name], pe.Err))
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
	if c.DatabaseURL != "" && !strings.HasPrefix(c.DatabaseURL, "postgres://") && !strings.HasPrefix(c.DatabaseURL, "postgresql://") {
		bad("DATABASE_URL", "must be a postgres:// URL")
	}
	if c.RedisURL != "" && !strings.HasPrefix(c.RedisURL, "redis://") && !strings.HasPrefix(c.RedisURL, "rediss://") {
		bad("REDIS_URL", "must be a redis:// or rediss:// URL")
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
	durations := []struct {
		name string
		v    time.Duration
	}{
		{"JWKS_REFRESH_INTERVAL", c.JWKSRefreshInterval}, {"JWT_LEEWAY", c.JWTLeeway + 1},
		{"SHUTDOWN_TIMEOUT", c.ShutdownTimeout}, {"REQUEST_TIMEOUT", c.RequestTimeout},
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
		c.CORSOrigins[i] = o
		switch {
		case o == "*":
			bad("CORS_ORIGINS", "must list origins: \"*\" cannot be used with credentials")
		case !validOrigin(o):
			bad("CORS_ORIGINS", "must list origins such as https://app.example.com (scheme and host, no path), got %q", o)
		}
	}
	if c.DataDir != "" {
		c.DataDir = filepath.Clean(c.DataDir)
	}
	errs = append(errs, c.validateChat()...)
	errs = append(errs, c.validateOps()...)
	return errors.Join(errs...)
}

// validOrigin reports whether o is an origin Fiber's CORS middleware takes
// (it panics on any other): scheme://host[:port], with an optional "*."
// subdomain wildcard.
func validOrigin(o string) bool {
	u, err := url.Parse(strings.Replace(o, "://*.", "://", 1))
	return err == nil && u.Scheme != "" && u.Host != "" && !strings.Contains(u.Host, "*") &&
		(u.Path == "" || u.Path == "/") && u.RawQuery == "" && u.Fragment == ""
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
	default:
		bad("LLM_PROVIDER", "must be builtin, openai or ollama, got %q", c.LLMProvider)
	}
	if c.LLMBaseURL != "" {
		u, err := url.Parse(c.LLMBaseURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("LLM_BASE_URL", "must be an http(s) URL such as https://api.openai.com/v1, got %q", c.LLMBaseURL)
		}
		c.LLMBaseURL = strings.TrimRight(c.LLMBaseURL, "/")
	}
	if c.LLMTimeout <= 0 {
		bad("LLM_TIMEOUT", "must be a positive duration such as 60s")
	}
	if c.ChatMaxSteps < 1 || c.ChatMaxSteps > 50 {
		bad("CHAT_MAX_STEPS", "must be between 1 and 50, got %d", c.ChatMaxSteps)
	}
	if c.ChatHistory < 0 || c.ChatHistory > 100 {
		bad("CHAT_HISTORY", "must be between 0 and 100, got %d", c.ChatHistory)
	}
	if c.ChatRateLimit <= 0 {
		bad("CHAT_RATE_LIMIT", "must be positive, got %d", c.ChatRateLimit)
	}
	return errs
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
