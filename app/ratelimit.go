package app

import (
	"context"
	"log/slog"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/gofiber/fiber/v2"
	"golang.org/x/time/rate"

	"github.com/evotodo/evo/store"
)

// Per-user rate limits.
//
// Writes (REST and MCP tools; RATE_LIMIT_WRITES a minute) and chat messages
// (CHAT_RATE_LIMIT a minute) are each limited per user by a token bucket
// that holds one minute's allowance: a user may spend it at once, then gets
// one more every 60/n seconds. With REDIS_URL the buckets live in Redis
// (GCRA, go-redis/redis_rate), so every replica draws on the same budget;
// without it each replica counts on its own. A replica takes a user's
// tokens from Redis a few at a time (a lease: up to leaseSize, one Redis
// call) and spends them locally, so a write costs a Redis call only every
// leaseSize writes of that user on that replica. Tokens are taken from the
// shared budget before they are spent, so the limit is never exceeded over a
// lease's lifetime; the error is bounded by the leases: a user may be refused
// while up to leaseSize-1 tokens sit unspent in each other replica's lease,
// and may spend up to leaseSize-1 leftover tokens per replica on top of a
// full bucket (leases are dropped after leaseTTL). A limit that cannot reach Redis
// lets the request through and logs a warning: the limit protects the
// server, and Redis trouble should not stop the app. While the broker knows
// Redis is down (RedisBroker.Down), and for failSkip after a check failed (before
// the broker noticed), the limits do not ask it at all.

// Surfaces of the rate limits: the "surface" label of evo_rate_limited_total,
// and the Redis key of the limits counted there.
const (
	surfaceWrites = "writes" // REST writes to /api/todos and MCP write tools
	surfaceChat   = "chat"   // chat messages (POST /api/chat and chat frames)
	surfaceWS     = "ws"     // inbound WebSocket frames (WS_RATE_LIMIT, counted by the hub)
)

// failSkip is how long a limit lets requests through without asking Redis after a
// check failed: the requests that come before the broker marks Redis down do not
// each wait for a failing call.
const failSkip = time.Second

// limitTimeout bounds the Redis round trip of one check.
const limitTimeout = 2 * time.Second

// leaseTTL is how long a replica keeps unspent leased tokens of a user.
const leaseTTL = time.Minute

// leaseSize is how many tokens a replica takes from a user's shared budget at
// once: a twentieth of the minute's allowance (1 below 40 a minute: exact),
// at most 64.
func leaseSize(perMinute int) int { return min(max(1, perMinute/20), 64) }

// userLimit is a per-user limit on one kind of request.
type userLimit struct {
	surface   string // surfaceWrites or surfaceChat
	what      string // what is counted, for the error: "writes", "chat messages"
	perMinute int
	redis     *redis_rate.Limiter // nil: counted in memory
	leases    *leases             // with redis: tokens taken from Redis, not yet spent
	prefix    string              // REDIS_PREFIX
	redisDown func() bool         // Redis is known down: let requests through without asking it
	failedAt  atomic.Int64        // unix nanoseconds of the last failed Redis check
	mem       *memoryBuckets
	log       *slog.Logger
	metrics   *metrics
}

// newUserLimit returns the limit of surface, perMinute requests per user, in
// Redis if the server has it.
func newUserLimit(s *Server, surface, what string, perMinute int) *userLimit {
	l := &userLimit{surface: surface, what: what, perMinute: perMinute, prefix: s.cfg.RedisPrefix, redisDown: s.redisDown, log: s.log, metrics: s.metrics}
	if s.redis != nil {
		l.redis = redis_rate.NewLimiter(s.redis)
		l.leases = &leases{users: map[string]*lease{}}
	} else {
		l.mem = newMemoryBuckets(perMinute)
	}
	return l
}

// allow takes one request from user's allowance. When it is used up it
// returns a rate_limited error and how long to wait for the next one.
func (l *userLimit) allow(ctx context.Context, user string) (time.Duration, error) {
	var retry time.Duration
	if l.redis != nil {
		if l.redisDown() || time.Since(time.Unix(0, l.failedAt.Load())) < failSkip {
			return 0, nil
		}
		var err error
		if retry, err = l.fromRedis(ctx, user); err != nil {
			l.failedAt.Store(time.Now().UnixNano())
			l.log.Warn("rate limit: redis failed, requests let through", slog.String("surface", l.surface),
				slog.Duration("for", failSkip), slog.Any("error", err))
			return 0, nil
		}
	} else {
		retry = l.mem.take(user, time.Now())
	}
	if retry == 0 {
		return 0, nil
	}
	l.metrics.rateLimited.WithLabelValues(l.surface).Inc()
	return retry, store.Errorf(store.CodeRateLimited, "too many %s: at most %d a minute; try again in %ds",
		l.what, l.perMinute, retrySeconds(retry))
}

// fromRedis spends one of user's leased tokens, leasing more from Redis when
// there are none: 0, or how long to wait when the shared budget is used up.
func (l *userLimit) fromRedis(ctx context.Context, user string) (time.Duration, error) {
	now := time.Now()
	ls := l.leases.get(user, now)
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.tokens > 0 && now.Before(ls.until) {
		ls.tokens--
		return 0, nil
	}
	rctx, cancel := context.WithTimeout(ctx, limitTimeout)
	defer cancel()
	res, err := l.redis.AllowAtMost(rctx, rateKey(l.prefix, l.surface, user), redis_rate.PerMinute(l.perMinute), leaseSize(l.perMinute))
	switch {
	case err != nil:
		return 0, err
	case res.Allowed == 0:
		ls.tokens = 0
		return max(res.RetryAfter, time.Millisecond), nil
	}
	ls.tokens, ls.until = res.Allowed-1, now.Add(leaseTTL)
	return 0, nil
}

// leases holds each user's leased tokens on this replica.
type leases struct {
	mu    sync.Mutex
	users map[string]*lease
	swept time.Time
}

// lease is tokens of one user's shared budget this replica took and has not spent.
type lease struct {
	mu     sync.Mutex // held across the Redis call that refills it
	tokens int
	until  time.Time
}

// get returns user's lease, forgetting empty and expired ones (at most once a
// second) once there are many users.
func (ls *leases) get(user string, now time.Time) *lease {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if len(ls.users) >= maxBucketUsers && now.Sub(ls.swept) >= time.Second {
		ls.swept = now
		for u, l := range ls.users {
			if l.mu.TryLock() {
				if l.tokens == 0 || !now.Before(l.until) {
					delete(ls.users, u)
				}
				l.mu.Unlock()
			}
		}
	}
	l, ok := ls.users[user]
	if !ok {
		l = &lease{}
		ls.users[user] = l
	}
	return l
}

// rateKey is the Redis key of user's bucket on surface (redis_rate puts "rate:"
// before it). The user id is a hash tag, so that on a Redis Cluster all of a
// user's keys live on one shard: REDIS_PREFIX{user}:surface.
func rateKey(prefix, surface, user string) string {
	return prefix + "{" + user + "}:" + surface
}

// retrySeconds is a Retry-After value: whole seconds, rounded up, at least 1.
func retrySeconds(d time.Duration) int {
	return max(1, int(math.Ceil(d.Seconds())))
}

// limitWrites is the REST write limit (RATE_LIMIT_WRITES per user per
// minute), after authenticate: when it is used up the request is answered
// 429 rate_limited with Retry-After and does not run.
func (s *Server) limitWrites(c *fiber.Ctx) error {
	retry, err := s.writes.allow(c.UserContext(), userID(c))
	if err != nil {
		c.Set(fiber.HeaderRetryAfter, strconv.Itoa(retrySeconds(retry)))
		return err
	}
	return c.Next()
}

// maxBucketUsers is how many users' buckets memoryBuckets keeps before it
// forgets the full ones.
const maxBucketUsers = 10000

// memoryBuckets is a token bucket per user, for one replica.
type memoryBuckets struct {
	perMinute int
	mu        sync.Mutex
	users     map[string]*rate.Limiter
	swept     time.Time
}

func newMemoryBuckets(perMinute int) *memoryBuckets {
	return &memoryBuckets{perMinute: perMinute, users: map[string]*rate.Limiter{}}
}

// take takes one token of user's bucket at now and returns 0, or, if the
// bucket is empty, how long until it holds one (nothing is taken then).
func (m *memoryBuckets) take(user string, now time.Time) time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.users) >= maxBucketUsers && now.Sub(m.swept) >= time.Second {
		// A full bucket is the same as no bucket: forget those. At most once
		// a second, so that many active users do not make every call sweep.
		m.swept = now
		for u, l := range m.users {
			if l.TokensAt(now) >= float64(m.perMinute) {
				delete(m.users, u)
			}
		}
	}
	l, ok := m.users[user]
	if !ok {
		l = rate.NewLimiter(rate.Every(time.Minute/time.Duration(m.perMinute)), m.perMinute)
		m.users[user] = l
	}
	r := l.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return d
	}
	return 0
}
