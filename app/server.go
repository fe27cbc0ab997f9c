package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	gojson "github.com/goccy/go-json"
	"github.com/gofiber/contrib/websocket"
	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/recover"
	"github.com/gofiber/fiber/v2/middleware/requestid"

	"github.com/redis/go-redis/v9"

	"github.com/evotodo/evo/app/auth"
	"github.com/evotodo/evo/realtime"
	"github.com/evotodo/evo/store"
	"github.com/evotodo/evo/store/postgres"
	"github.com/evotodo/evo/store/sqlite"
)

// Locals keys.
const (
	requestIDKey = "requestid"
	userKey      = "user_id"
	expiresKey   = "token_expires"
)

// Server is one Evo replica: the store, the verifier, the Fiber app.
type Server struct {
	cfg      Config
	log      *slog.Logger
	db       store.DB
	todos    *store.Todos
	verifier *auth.Verifier
	issuer   *auth.Issuer // dev mode only
	app      *fiber.App
	hub      *realtime.Hub
	redis    redis.UniversalClient      // nil without REDIS_URL; a *redis.ClusterClient for a cluster
	broker   interface{ Close() error } // the Redis broker, if any
	baseCtx  context.Context            // outlives requests; cancelled after shutdown
	cancel   context.CancelFunc
	wg       sync.WaitGroup // background goroutines
	stopping atomic.Bool    // set when shutdown starts: /ready and new sockets answer 503
	chat     *chatService   // the agent, its rate limit and running chats (chat.go)
	writes   *userLimit     // RATE_LIMIT_WRITES (ratelimit.go)
	metrics  *metrics       // served at /metrics (metrics.go)
}

// devIssuerURL is the dev issuer's iss and aud: PUBLIC_URL, or the
// server's own URL on port.
func devIssuerURL(cfg Config, port int) string {
	if cfg.PublicURL != "" {
		return cfg.PublicURL
	}
	return "http://localhost:" + strconv.Itoa(port)
}

// devKeyPath is where the dev issuer keeps its signing key.
func devKeyPath(cfg Config) string { return filepath.Join(cfg.DataDir, "dev-signing-key") }

// openStore opens and migrates the configured store: PostgreSQL when
// DATABASE_URL is set, else SQLite under DATA_DIR.
func openStore(ctx context.Context, cfg Config, log *slog.Logger) (store.DB, error) {
	if cfg.DatabaseURL != "" {
		db, err := postgres.Open(ctx, cfg.DatabaseURL, int32(cfg.DBMaxConns))
		if err != nil {
			return nil, fmt.Errorf("DATABASE_URL: %w", err)
		}
		if err := db.Migrate(ctx, log); err != nil {
			db.Close()
			return nil, err
		}
		return newBoundedDB(db, cfg.DBTimeout), nil
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("DATA_DIR: %w", err)
	}
	db, err := sqlite.Open(ctx, filepath.Join(cfg.DataDir, "evo.db"))
	if err != nil {
		return nil, fmt.Errorf("DATA_DIR: %w", err)
	}
	if err := db.Migrate(ctx, log); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// NewServer opens the store and wires a replica that will serve on port
// (the port matters to the dev issuer, whose URL names it).
func NewServer(ctx context.Context, cfg Config, log *slog.Logger, port int) (*Server, error) {
	if err := cfg.devIssuerError(); err != nil {
		return nil, err
	}
	model, err := openModel(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	db, err := openStore(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	cfg.ReplicaID = replicaID(cfg, port)
	s := &Server{cfg: cfg, log: log, db: db, metrics: newMetrics(cfg)}
	acfg := authConfig(cfg)
	if cfg.DevIssuer() {
		url := devIssuerURL(cfg, port)
		if s.issuer, err = auth.LoadIssuer(url, devKeyPath(cfg)); err != nil {
			db.Close()
			return nil, err
		}
		// The dev issuer's tokens are verified like Better Auth's, against
		// its key set given directly (no fetch of our own URL, which HOST,
		// a proxy or a container network can make unreachable).
		acfg.JWKSURL, acfg.Keys = "", s.issuer.KeySet()
		acfg.Issuer, acfg.Audience = url, url
		log.Warn("AUTH MODE: DEV ISSUER. Anyone who can reach this server can sign in as any user "+
			"(POST /api/dev/token, `evo token --email ...`); set BETTER_AUTH_URL for real users",
			slog.String("auth", "dev-issuer"), slog.String("issuer", url), slog.Bool("dev_auth", cfg.DevAuth))
	} else {
		log.Info("auth mode: Better Auth", slog.String("auth", "better-auth"), slog.String("jwks", acfg.JWKSURL))
	}
	s.verifier = auth.NewVerifier(acfg, db, log)
	if err := s.openHub(ctx); err != nil {
		db.Close()
		return nil, err
	}
	s.metrics.watchHub(s.hub)
	s.writes = newUserLimit(s, surfaceWrites, "writes", cfg.RateLimitWrites)
	s.chat = newChatService(s, model)
	if err := s.listenControl(ctx); err != nil {
		if s.broker != nil {
			s.broker.Close()
			s.redis.Close()
		}
		db.Close()
		return nil, fmt.Errorf("REDIS_URL: %w", err)
	}
	s.baseCtx, s.cancel = context.WithCancel(context.WithoutCancel(ctx))
	s.app = s.routes()
	return s, nil
}

// authConfig is the verifier configuration for Better Auth at
// BETTER_AUTH_URL.
func authConfig(cfg Config) auth.Config {
	return auth.Config{
		JWKSURL:         cfg.BetterAuthURL + "/api/auth/jwks",
		Issuer:          cfg.BetterAuthURL,
		Audience:        cfg.BetterAuthURL,
		CacheLifespan:   time.Duration(cfg.JWKSCacheLifespan) * time.Second,
		MaxKeys:         cfg.JWKSCacheMaxKeys,
		RefreshInterval: cfg.JWKSRefreshInterval,
		Leeway:          cfg.JWTLeeway,
		IssuerHint:      issuerHint(cfg), // app.go
		KeyHint:         keyHint(cfg),
	}
}

// openHub wires the realtime hub to its broker (Redis when REDIS_URL is set,
// else in-process) and the store to the hub.
func (s *Server) openHub(ctx context.Context) error {
	var broker realtime.Broker = realtime.NewMemoryBroker()
	if s.cfg.RedisURL != "" {
		target, err := redisOptions(s.cfg.RedisURL)
		if err != nil {
			return fmt.Errorf("REDIS_URL: %w", err)
		}
		redis.SetLogger(redisLogger{s.log}) // process-wide: go-redis has one logger
		s.redis = target.client()
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := s.redis.Ping(pctx).Err(); err != nil {
			s.redis.Close()
			return fmt.Errorf("REDIS_URL: connect to Redis: %w", err)
		}
		rb, err := realtime.NewRedisBroker(s.redis, s.cfg.RedisPrefix, s.log)
		if err != nil {
			s.redis.Close()
			return fmt.Errorf("REDIS_URL: %w", err)
		}
		broker, s.broker = rb, rb
	}
	ev := &events{db: s.db, log: s.log}
	s.hub = realtime.NewHub(broker, ev, realtime.Config{
		QueueSize:       s.cfg.WSQueueSize,
		PingInterval:    s.cfg.WSPingInterval,
		PongTimeout:     s.cfg.WSPongTimeout,
		MaxMessageSize:  int64(s.cfg.WSMaxMessageSize),
		Replica:         s.cfg.ReplicaID,
		GapWait:         s.cfg.WSGapWait,
		MaxConnsPerUser: s.cfg.WSMaxConnsPerUser,
		MaxConns:        s.cfg.WSMaxConns,
		RateLimit:       s.cfg.WSRateLimit,
		RateBurst:       s.cfg.WSRateBurst,
		Metrics:         s.metrics,
	}, s.log)
	ev.hub = s.hub
	s.todos = store.NewTodos(s.db, ev)
	return nil
}

func (s *Server) routes() *fiber.App {
	app := fiber.New(fiber.Config{
		AppName:               "evo",
		DisableStartupMessage: true,
		ErrorHandler:          s.handleError,
		// go-json writes the same bytes as encoding/json (TestJSONEncoder), 3x
		// faster on a list of todos.
		JSONEncoder: gojson.Marshal,
		BodyLimit:   s.cfg.BodyLimit,
		// Headers up to 16 KiB: a Better Auth token carries the whole user
		// row (an image data: URL can be long); the verifier caps it at 8 KiB.
		ReadBufferSize: 16 << 10,
		// Release the connection's read buffer when no bytes are pending: a
		// hijacked WebSocket would otherwise keep its 16 KiB for its lifetime.
		ReduceMemoryUsage: true,
		ReadTimeout:       s.cfg.RequestTimeout,
		WriteTimeout:      s.cfg.RequestTimeout,
		IdleTimeout:       2 * time.Minute,
	})
	app.Use(recover.New(recover.Config{
		EnableStackTrace: true,
		StackTraceHandler: func(c *fiber.Ctx, e any) {
			s.log.Error("panic", requestAttrs(c), slog.Any("panic", e))
		},
	}))
	app.Use(baseHeaders) // X-Request-ID checked, nosniff (headers.go)
	app.Use(requestid.New(requestid.Config{ContextKey: requestIDKey}))
	app.Use(s.logRequests)
	app.Use(s.cors()) // cors.go

	app.Get("/health", func(c *fiber.Ctx) error { return c.JSON(fiber.Map{"status": "healthy"}) })
	app.Get("/ready", s.ready)
	if s.issuer != nil {
		app.Get("/api/auth/jwks", func(c *fiber.Ctx) error {
			c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
			return c.Send(s.issuer.JWKS())
		})
	}

	app.Get("/ws", s.wsAuthenticate, websocket.New(s.wsServe, websocket.Config{
		// Inbound frames are small; larger ones are read through the buffer.
		ReadBufferSize:  1024,
		WriteBufferSize: 4096,
		// A write buffer only while a frame is written, not per idle socket.
		WriteBufferPool: &sync.Pool{},
	}))

	s.mountMCP(app)
	s.mountMetrics(app)
	s.mountOpenAPI(app)
	s.mountConsole(app) // before the /api group: public files and the dev sign-in
	api := app.Group("/api", s.withTimeout, s.authenticate)
	api.Get("/todos", s.listTodos)
	api.Post("/todos", s.limitWrites, s.createTodo)
	api.Get("/todos/:id", s.getTodo)
	api.Put("/todos/:id", s.limitWrites, s.updateTodo)
	api.Patch("/todos/:id", s.limitWrites, s.toggleTodo)
	api.Delete("/todos/:id", s.limitWrites, s.deleteTodo)
	api.Post("/chat", s.postChat)
	api.Get("/chat/:user_id", s.listChat)
	api.Post("/chat/:id/cancel", s.postChatCancel)
	s.metrics.routes = newRouteTable(app.GetRoutes(true))
	return app
}

// logRequests logs one line per request, after the error handler ran, and
// counts it in the metrics.
func (s *Server) logRequests(c *fiber.Ctx) error {
	start := time.Now()
	err := c.Next()
	if err != nil {
		if herr := s.handleError(c, err); herr != nil {
			return herr
		}
	}
	status := c.Response().StatusCode()
	level := slog.LevelInfo
	if status >= 500 {
		level = slog.LevelError
	}
	took := time.Since(start)
	s.log.LogAttrs(c.UserContext(), level, "request", requestAttrs(c),
		slog.Int("status", status), slog.Duration("took", took))
	s.metrics.observeHTTP(c.Method(), c.Path(), status, took)
	return nil
}

// withTimeout bounds the request's work with REQUEST_TIMEOUT. Handlers pass
// c.UserContext() on and keep nothing of c.
func (s *Server) withTimeout(c *fiber.Ctx) error {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.RequestTimeout)
	defer cancel()
	c.SetUserContext(ctx)
	return c.Next()
}

// bearer returns the token of an "Authorization: Bearer <token>" header.
func bearer(header string) (string, error) {
	// The scheme is case-insensitive (RFC 6750 via RFC 7235): "bearer x"
	// is fine, "Token x" and "Bearerx" are not.
	scheme, token, _ := strings.Cut(strings.TrimSpace(header), " ")
	token = strings.TrimSpace(token)
	switch {
	case header == "":
		return "", store.Errorf(store.CodeUnauthorized, "missing Authorization header")
	case !strings.EqualFold(scheme, "Bearer"):
		return "", store.Errorf(store.CodeUnauthorized, "Authorization header must be \"Bearer <token>\"")
	case token == "":
		return "", store.Errorf(store.CodeUnauthorized, "missing token after \"Bearer\"")
	}
	return token, nil
}

// authenticate requires a valid bearer token and puts its user in Locals.
func (s *Server) authenticate(c *fiber.Ctx) error {
	if s.issuer != nil && c.Path() == "/api/auth/jwks" {
		return c.Next()
	}
	token, err := bearer(c.Get(fiber.HeaderAuthorization))
	if err != nil {
		return s.challenge(c, err)
	}
	claims, err := s.verifier.Verify(c.UserContext(), token)
	if err != nil {
		return s.challenge(c, err)
	}
	c.Locals(userKey, claims.UserID)
	c.Locals(expiresKey, claims.Expires)
	return c.Next()
}

// optionalAuth is authenticate for public endpoints: a request without an
// Authorization header goes on with no user (see optionalUserID). A header
// that is present but invalid is still a 401 (and an unreachable JWKS a
// 503): a client that sends a token means to act as its user, and serving
// it anonymously would hide an expired token behind a page that merely
// looks logged out.
func (s *Server) optionalAuth(c *fiber.Ctx) error {
	if c.Get(fiber.HeaderAuthorization) == "" {
		return c.Next()
	}
	return s.authenticate(c)
}

// optionalUserID returns the user of a request behind optionalAuth, if any.
func optionalUserID(c *fiber.Ctx) (string, bool) {
	id, ok := c.Locals(userKey).(string)
	return id, ok
}

// challenge adds the WWW-Authenticate header to a 401.
func (s *Server) challenge(c *fiber.Ctx, err error) error {
	switch {
	case store.ErrorCode(err) != store.CodeUnauthorized:
	case c.Get(fiber.HeaderAuthorization) == "" && c.Query("token") == "":
		// No credentials at all: no error code (RFC 6750, section 3.1).
		c.Set(fiber.HeaderWWWAuthenticate, `Bearer`)
	default:
		c.Set(fiber.HeaderWWWAuthenticate, `Bearer error="invalid_token"`)
	}
	return err
}

// userID returns the authenticated user of the request.
func userID(c *fiber.Ctx) string { return c.Locals(userKey).(string) }

func (s *Server) ready(c *fiber.Ctx) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	checks := fiber.Map{"database": "ok"}
	ok := true
	if s.stopping.Load() {
		checks["server"], ok = "shutting down", false
	}
	if err := s.db.Ping(ctx); err != nil {
		checks["database"], ok = "unreachable", false
		s.log.Warn("readiness: database unreachable", slog.Any("error", err))
	}
	if s.redis != nil {
		checks["redis"] = "ok"
		if err := s.redis.Ping(ctx).Err(); err != nil {
			checks["redis"], ok = "unreachable", false
			s.log.Warn("readiness: redis unreachable", slog.Any("error", err))
		}
	}
	if !ok {
		return c.Status(fiber.StatusServiceUnavailable).JSON(fiber.Map{"status": "unavailable", "checks": checks})
	}
	return c.JSON(fiber.Map{"status": "ready", "checks": checks})
}

// Serve serves on ln until ctx is done, then shuts down gracefully within
// SHUTDOWN_TIMEOUT: it stops accepting, lets in-flight requests finish and
// closes the store.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	errc := make(chan error, 1)
	// A connection's first request must arrive within REQUEST_TIMEOUT, and
	// running out of descriptors pauses accepting rather than ending Serve.
	go func() { errc <- s.app.Listener(newGuardedListener(ln, s.cfg.RequestTimeout, s.log)) }()
	s.wg.Go(func() { s.pruneEvents(s.baseCtx) })
	if feed, ok := s.db.(eventFeed); ok { // embedded: other processes may write the file (follow.go)
		s.wg.Go(func() { s.followEvents(s.baseCtx, feed) })
	}
	s.log.Info("serving", slog.String("addr", ln.Addr().String()), slog.String("environment", s.cfg.Environment))
	var err error
	select {
	case err = <-errc:
	case <-ctx.Done():
		s.stopping.Store(true)
		s.log.Info("shutting down", slog.Duration("grace", s.cfg.ShutdownTimeout), slog.Int("sockets", s.hub.Conns()))
		// Sockets first (1001: reconnect elsewhere and resume), then HTTP:
		// hijacked connections are invisible to Fiber's shutdown.
		sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
		defer cancel()
		if serr := s.hub.Shutdown(sctx); serr != nil {
			s.log.Warn("shutdown sockets", slog.Any("error", serr))
		}
		if serr := s.app.ShutdownWithContext(sctx); serr != nil {
			s.log.Warn("shutdown", slog.Any("error", serr))
		}
		// A shutdown that came before the listener goroutine started
		// serving finds nothing to stop: closing ln ends it either way.
		ln.Close()
		if err = <-errc; errors.Is(err, net.ErrClosed) {
			err = nil
		}
	}
	s.cancel()
	s.wg.Wait()
	if s.broker != nil {
		s.broker.Close()
	}
	if s.redis != nil {
		s.redis.Close()
	}
	s.db.Close()
	s.log.Info("stopped")
	return err
}

// pruneEvents trims the event logs at start and then every 10 minutes.
func (s *Server) pruneEvents(ctx context.Context) {
	t := time.NewTicker(10 * time.Minute)
	defer t.Stop()
	for {
		n, err := s.db.PruneEvents(ctx, s.cfg.EventRetentionCount, time.Now().Add(-s.cfg.EventRetentionAge))
		switch {
		case err != nil && !errors.Is(err, context.Canceled):
			s.log.Warn("prune events", slog.Any("error", err))
		case n > 0:
			s.log.Info("pruned events", slog.Int64("deleted", n))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
