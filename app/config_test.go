package app

import (
	"bytes"
	"context"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/evotodo/evo/store/storetest"
)

// getenv returns a getenv func over vars.
func getenv(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

func TestLoadConfigRejectsBadValuesNamingTheVariable(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want string // the variable the error must name
	}{
		{"PortNotANumber", map[string]string{"PORT": "abc"}, "PORT"},
		{"PortTooLarge", map[string]string{"PORT": "70000"}, "PORT"},
		{"PortNegative", map[string]string{"PORT": "-1"}, "PORT"},
		{"DebugNotABoolean", map[string]string{"DEBUG": "maybe"}, "DEBUG"},
		{"JWKSCacheLifespanNegative", map[string]string{"JWKS_CACHE_LIFESPAN": "-1"}, "JWKS_CACHE_LIFESPAN"},
		{"JWKSCacheLifespanZero", map[string]string{"JWKS_CACHE_LIFESPAN": "0"}, "JWKS_CACHE_LIFESPAN"},
		{"JWKSCacheLifespanWithUnit", map[string]string{"JWKS_CACHE_LIFESPAN": "5m"}, "JWKS_CACHE_LIFESPAN"},
		{"JWKSCacheMaxKeysZero", map[string]string{"JWKS_CACHE_MAX_KEYS": "0"}, "JWKS_CACHE_MAX_KEYS"},
		{"JWKSRefreshIntervalNotADuration", map[string]string{"JWKS_REFRESH_INTERVAL": "often"}, "JWKS_REFRESH_INTERVAL"},
		{"JWTLeewayNegative", map[string]string{"JWT_LEEWAY": "-1s"}, "JWT_LEEWAY"},
		{"ShutdownTimeoutWithoutUnit", map[string]string{"SHUTDOWN_TIMEOUT": "10"}, "SHUTDOWN_TIMEOUT"},
		{"RequestTimeoutZero", map[string]string{"REQUEST_TIMEOUT": "0s"}, "REQUEST_TIMEOUT"},
		{"DBMaxConnsZero", map[string]string{"DB_MAX_CONNS": "0"}, "DB_MAX_CONNS"},
		{"BodyLimitZero", map[string]string{"BODY_LIMIT": "0"}, "BODY_LIMIT"},
		{"EventRetentionCountZero", map[string]string{"EVENT_RETENTION_COUNT": "0"}, "EVENT_RETENTION_COUNT"},
		{"EventRetentionAgeNegative", map[string]string{"EVENT_RETENTION_AGE": "-1h"}, "EVENT_RETENTION_AGE"},
		{"DatabaseURLMySQL", map[string]string{"DATABASE_URL": "mysql://x"}, "DATABASE_URL"},
		{"RedisURLHTTP", map[string]string{"REDIS_URL": "http://localhost:6379"}, "REDIS_URL"},
		{"EnvironmentStaging", map[string]string{"ENVIRONMENT": "staging"}, "ENVIRONMENT"},
		{"ProductionWithoutBetterAuthURL", map[string]string{"ENVIRONMENT": "production"}, "BETTER_AUTH_URL"},
		{"BetterAuthURLWithoutScheme", map[string]string{"BETTER_AUTH_URL": "auth.example.com"}, "BETTER_AUTH_URL"},
		{"BetterAuthURLFTP", map[string]string{"BETTER_AUTH_URL": "ftp://auth.example.com"}, "BETTER_AUTH_URL"},
		{"CORSOriginsWildcard", map[string]string{"CORS_ORIGINS": "*"}, "CORS_ORIGINS"},
		{"CORSOriginsWildcardInList", map[string]string{"CORS_ORIGINS": "https://app.example, *"}, "CORS_ORIGINS"},
		{"CORSOriginsWithoutScheme", map[string]string{"CORS_ORIGINS": "localhost:3000"}, "CORS_ORIGINS"},
		{"CORSOriginsWithPath", map[string]string{"CORS_ORIGINS": "https://app.example/login"}, "CORS_ORIGINS"},
		{"CORSOriginsEmptyEntry", map[string]string{"CORS_ORIGINS": "https://app.example,,https://b.example"}, "CORS_ORIGINS"},
		{"CORSOriginsWildcardWithoutScheme", map[string]string{"CORS_ORIGINS": "*.example.com"}, "CORS_ORIGINS"},
		{"CORSOriginsWildcardHost", map[string]string{"CORS_ORIGINS": "https://*"}, "CORS_ORIGINS"},
		{"CORSOriginsInnerWildcard", map[string]string{"CORS_ORIGINS": "https://app.*.example.com"}, "CORS_ORIGINS"},
		{"CORSOriginsUser", map[string]string{"CORS_ORIGINS": "https://me@app.example.com"}, "CORS_ORIGINS"},
		{"GOGCNotANumber", map[string]string{"GOGC": "abc"}, "GOGC"},
		{"DatabaseURLUnknownDriver", map[string]string{"DATABASE_URL": "postgresql+odbc://u@db/evo"}, "DATABASE_URL"},
		{"DatabaseURLNoScheme", map[string]string{"DATABASE_URL": "u@db/evo"}, "DATABASE_URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LoadConfig(getenv(tt.env))
			if err == nil {
				t.Fatalf("got no error, want one naming %s", tt.want)
			}
			if got := err.Error(); !strings.Contains(got, tt.want) {
				t.Errorf("got %q, want it to name %s", got, tt.want)
			}
		})
	}
}

func TestLoadConfigNamesEveryBadVariable(t *testing.T) {
	_, err := LoadConfig(getenv(map[string]string{"PORT": "70000", "ENVIRONMENT": "staging", "CORS_ORIGINS": "*"}))
	if err == nil {
		t.Fatal("got no error")
	}
	for _, want := range []string{"PORT", "ENVIRONMENT", "CORS_ORIGINS"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("got %q, want it to name %s", err, want)
		}
	}
}

func TestLoadConfigDefaultsAreAsDocumented(t *testing.T) {
	cfg, err := LoadConfig(getenv(nil))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		got  any
		want any
	}{
		{"ENVIRONMENT", cfg.Environment, "development"},
		{"DEBUG", cfg.Debug, false},
		{"HOST", cfg.Host, ""},
		{"PORT", cfg.Port, 8000},
		{"DATA_DIR", cfg.DataDir, "data"}, // ./data, cleaned
		{"DATABASE_URL", cfg.DatabaseURL, ""},
		{"DB_MAX_CONNS", cfg.DBMaxConns, 5},
		{"REDIS_URL", cfg.RedisURL, ""},
		{"BETTER_AUTH_URL", cfg.BetterAuthURL, ""},
		{"JWKS_CACHE_LIFESPAN", cfg.JWKSCacheLifespan, 300},
		{"JWKS_CACHE_MAX_KEYS", cfg.JWKSCacheMaxKeys, 16},
		{"JWKS_REFRESH_INTERVAL", cfg.JWKSRefreshInterval, 10 * time.Second},
		{"JWT_LEEWAY", cfg.JWTLeeway, 30 * time.Second},
		{"CORS_ORIGINS", cfg.CORSOrigins, []string{"http://localhost:3000"}},
		{"SHUTDOWN_TIMEOUT", cfg.ShutdownTimeout, 10 * time.Second},
		{"REQUEST_TIMEOUT", cfg.RequestTimeout, 30 * time.Second},
		{"BODY_LIMIT", cfg.BodyLimit, 1 << 20},
		{"WS_QUEUE_SIZE", cfg.WSQueueSize, 1024},
		{"WS_PING_INTERVAL", cfg.WSPingInterval, 25 * time.Second},
		{"WS_PONG_TIMEOUT", cfg.WSPongTimeout, 10 * time.Second},
		{"WS_MAX_MESSAGE_SIZE", cfg.WSMaxMessageSize, 65536},
		{"WS_MAX_CONNS_PER_USER", cfg.WSMaxConnsPerUser, 32},
		{"WS_MAX_CONNS", cfg.WSMaxConns, 20000},
		{"WS_RATE_LIMIT", cfg.WSRateLimit, 20.0},
		{"WS_RATE_BURST", cfg.WSRateBurst, 40},
		{"WS_GAP_WAIT", cfg.WSGapWait, time.Second},
		{"EVENT_RETENTION_COUNT", cfg.EventRetentionCount, 10000},
		{"EVENT_RETENTION_AGE", cfg.EventRetentionAge, 168 * time.Hour},
		{"Production()", cfg.Production(), false},
		{"DevIssuer()", cfg.DevIssuer(), true},
	}
	for _, tt := range tests {
		if !reflect.DeepEqual(tt.got, tt.want) {
			t.Errorf("%s: got %#v, want %#v", tt.name, tt.got, tt.want)
		}
	}
}

func TestLoadConfigAcceptsGoodValues(t *testing.T) {
	tests := []struct {
		name  string
		env   map[string]string
		check func(Config) (got, want any)
	}{
		{"BetterAuthURLTrailingSlashTrimmed",
			map[string]string{"BETTER_AUTH_URL": "https://auth.example/"},
			func(c Config) (any, any) { return c.BetterAuthURL, "https://auth.example" }},
		{"ProductionWithBetterAuthURLHasNoDevIssuer",
			map[string]string{"ENVIRONMENT": "production", "BETTER_AUTH_URL": "https://auth.example"},
			func(c Config) (any, any) { return []bool{c.Production(), c.DevIssuer()}, []bool{true, false} }},
		{"DevelopmentWithBetterAuthURLHasNoDevIssuer",
			map[string]string{"BETTER_AUTH_URL": "http://localhost:3000"},
			func(c Config) (any, any) { return c.DevIssuer(), false }},
		{"CORSOriginsListTrimmed",
			map[string]string{"CORS_ORIGINS": "https://a.example, http://localhost:3000"},
			func(c Config) (any, any) {
				return c.CORSOrigins, []string{"https://a.example", "http://localhost:3000"}
			}},
		{"CORSOriginsSubdomainWildcard",
			map[string]string{"CORS_ORIGINS": "https://*.example.com"},
			func(c Config) (any, any) { return c.CORSOrigins, []string{"https://*.example.com"} }},
		{"PortZeroPicksAFreePort",
			map[string]string{"PORT": "0"},
			func(c Config) (any, any) { return c.Port, 0 }},
		{"PostgresqlScheme",
			map[string]string{"DATABASE_URL": "postgresql://u@db/evo"},
			func(c Config) (any, any) { return c.DatabaseURL, "postgresql://u@db/evo" }},
		{"JWTLeewayZero",
			map[string]string{"JWT_LEEWAY": "0s"},
			func(c Config) (any, any) { return c.JWTLeeway, time.Duration(0) }},
		{"CORSOriginsNormalised",
			map[string]string{"CORS_ORIGINS": "HTTPS://App.Example.com/, http://localhost:80,https://*.Example.org:443"},
			func(c Config) (any, any) {
				return c.CORSOrigins, []string{"https://app.example.com", "http://localhost", "https://*.example.org"}
			}},
		{"DatabaseURLSQLAlchemyPsycopg",
			map[string]string{"DATABASE_URL": "postgresql+psycopg://u:p@db:5432/evo?sslmode=require"},
			func(c Config) (any, any) { return c.DatabaseURL, "postgres://u:p@db:5432/evo?sslmode=require" }},
		{"DatabaseURLSQLAlchemyAsyncpg",
			map[string]string{"DATABASE_URL": "postgresql+asyncpg://u@db/evo"},
			func(c Config) (any, any) { return c.DatabaseURL, "postgres://u@db/evo" }},
		{"GOGCOff",
			map[string]string{"GOGC": "off"},
			func(c Config) (any, any) { return c.GOGC, "off" }},
		{"OpenAIDefaultsApplied",
			map[string]string{"LLM_PROVIDER": "openai"},
			func(c Config) (any, any) {
				return []string{c.LLMBaseURL, c.LLMModel}, []string{"https://api.openai.com/v1", "gpt-4o-mini"}
			}},
		{"OllamaDefaultsApplied",
			map[string]string{"LLM_PROVIDER": "ollama"},
			func(c Config) (any, any) {
				return []string{c.LLMBaseURL, c.LLMModel}, []string{"http://localhost:11434", "llama3.2"}
			}},
		{"DataDirCleaned",
			map[string]string{"DATA_DIR": "/var/lib/evo/"},
			func(c Config) (any, any) { return c.DataDir, "/var/lib/evo" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := LoadConfig(getenv(tt.env))
			if err != nil {
				t.Fatal(err)
			}
			if got, want := tt.check(cfg); !reflect.DeepEqual(got, want) {
				t.Errorf("got %#v, want %#v", got, want)
			}
		})
	}
}

// TestLoadConfigParseErrorsSayWhatIsWanted: a value that does not parse gets
// the form it should have, not the parser's words.
func TestLoadConfigParseErrorsSayWhatIsWanted(t *testing.T) {
	for _, tc := range []struct{ name, value, want string }{
		{"SHUTDOWN_TIMEOUT", "10", `SHUTDOWN_TIMEOUT: must be a duration such as 30s, got "10"`},
		{"WS_PING_INTERVAL", "soon", `WS_PING_INTERVAL: must be a duration such as 30s, got "soon"`},
		{"GOGC", "abc", `GOGC: must be off or an integer (the GC target, percent), got "abc"`},
	} {
		_, err := LoadConfig(getenv(map[string]string{tc.name: tc.value}))
		if err == nil || err.Error() != tc.want {
			t.Errorf("%s=%s: got %v, want %q", tc.name, tc.value, err, tc.want)
		}
	}
}

// TestStartupLogSaysWhatConfigChanged: the SQLAlchemy DATABASE_URL of the
// Python backend works and the log says it was rewritten; LLM_PROVIDER=openai
// logs the base URL and model in use and warns about a missing key, except for
// a local server.
func TestStartupLogSaysWhatConfigChanged(t *testing.T) {
	t.Run("SQLAlchemyDatabaseURL", func(t *testing.T) {
		pg := storetest.PostgresURL(t)
		_, rest, _ := strings.Cut(pg, "://")
		err, _, stderr := runCLI(t, map[string]string{"DATABASE_URL": "postgresql+psycopg://" + rest}, "migrate")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(stderr, "DATABASE_URL: a SQLAlchemy URL; using it as postgres://") || !strings.Contains(stderr, "database schema migrated") {
			t.Fatalf("stderr %q, want the rewrite noted and the migrations applied", stderr)
		}
	})
	t.Run("OpenAIWithoutKey", func(t *testing.T) {
		_, _, stderr := runCLI(t, map[string]string{"LLM_PROVIDER": "openai"}, "migrate")
		if !strings.Contains(stderr, "level=WARN") || !strings.Contains(stderr, "LLM_API_KEY is not set") || !strings.Contains(stderr, "base_url=https://api.openai.com/v1") {
			t.Fatalf("stderr %q, want a warning about LLM_API_KEY", stderr)
		}
		cfg, err := LoadConfig(getenv(map[string]string{"LLM_PROVIDER": "openai"}))
		if err != nil {
			t.Fatal(err)
		}
		var log bytes.Buffer
		if _, err := openModel(context.Background(), cfg, slog.New(slog.NewTextHandler(&log, nil))); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(log.String(), "base_url=https://api.openai.com/v1 model=gpt-4o-mini") {
			t.Fatalf("chat model log %q, want the defaults in use", log.String())
		}
	})
	for _, env := range []map[string]string{
		{"LLM_PROVIDER": "openai", "LLM_BASE_URL": "http://127.0.0.1:8080/v1"},
		{"LLM_PROVIDER": "openai", "LLM_BASE_URL": "http://localhost:1234/v1"},
		{"LLM_PROVIDER": "openai", "LLM_BASE_URL": "http://10.0.0.7:8000/v1"},
		{"LLM_PROVIDER": "openai", "LLM_BASE_URL": "http://vllm:8000/v1"},
		{"LLM_PROVIDER": "openai", "LLM_API_KEY": "sk-test"},
		{"LLM_PROVIDER": "ollama"},
	} {
		if _, _, stderr := runCLI(t, env, "migrate"); strings.Contains(stderr, "LLM_API_KEY") {
			t.Errorf("%v: stderr %q, want no key warning", env, stderr)
		}
	}
}
