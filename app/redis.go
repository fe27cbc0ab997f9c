package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/evotodo/evo/realtime"
)

// clusterStateReload is how old go-redis's map of a Redis Cluster's slots may grow
// before it is read again (go-redis: 60s). After a master fails, the PubSub
// connections of its slots reconnect only once the map names the replica that took
// over, so keep it short: one CLUSTER SLOTS a second per replica.
const clusterStateReload = time.Second

// redisTarget is what REDIS_URL names: one Redis or a Redis Cluster.
type redisTarget struct {
	single  *redis.Options
	cluster *redis.ClusterOptions
}

// redisOptions parses REDIS_URL: redis:// or rediss:// (go-redis's ParseURL) is one
// Redis; redis+cluster://[user:password@]host:port[,host:port...][?options]
// (rediss+cluster:// with TLS; the options of go-redis's ParseClusterURL) is a Redis
// Cluster, reached through any of the listed nodes.
func redisOptions(raw string) (redisTarget, error) {
	scheme, rest, ok := strings.Cut(raw, "://")
	switch {
	case ok && (scheme == "redis" || scheme == "rediss"):
		o, err := redis.ParseURL(raw)
		if err != nil {
			return redisTarget{}, err
		}
		return redisTarget{single: o}, nil
	case ok && (scheme == "redis+cluster" || scheme == "rediss+cluster"):
	default:
		return redisTarget{}, errors.New("must be a redis://, rediss:// or redis+cluster://host:port,host:port URL")
	}
	// The node list is no URL host: rewrite it as go-redis's cluster URL, where
	// the nodes after the first are addr= parameters.
	authority, query, _ := strings.Cut(rest, "?")
	authority, path, _ := strings.Cut(authority, "/")
	if path != "" {
		return redisTarget{}, errors.New("a Redis Cluster URL names no database (a cluster has only database 0)")
	}
	userinfo, hosts := "", authority
	if i := strings.LastIndexByte(authority, '@'); i >= 0 {
		userinfo, hosts = authority[:i+1], authority[i+1:]
	}
	addrs := strings.Split(hosts, ",")
	q, err := url.ParseQuery(query)
	if err != nil {
		return redisTarget{}, fmt.Errorf("cluster URL options: %w", err)
	}
	for _, a := range addrs[1:] {
		q.Add("addr", a)
	}
	for _, a := range addrs {
		if a == "" || !strings.Contains(a, ":") {
			return redisTarget{}, fmt.Errorf("cluster node %q: want host:port", a)
		}
	}
	o, err := redis.ParseClusterURL(strings.TrimSuffix(scheme, "+cluster") + "://" + userinfo + addrs[0] + "?" + q.Encode())
	if err != nil {
		return redisTarget{}, err
	}
	if o.ClusterStateReloadInterval == 0 {
		o.ClusterStateReloadInterval = clusterStateReload
	}
	return redisTarget{cluster: o}, nil
}

// client returns a client for t.
func (t redisTarget) client() redis.UniversalClient {
	// Contexts bound every call (the broker's publish timeout, the rate limit's).
	// A dial is tried once: go-redis's default (5 attempts 100 ms apart, for each of
	// a command's retries) made a command to a Redis that refuses connections take
	// 1.7 s, and the first writes after Redis died wait for it; the broker's probe
	// finds Redis again when it is back.
	if t.cluster != nil {
		t.cluster.ContextTimeoutEnabled = true
		t.cluster.DialerRetries = 1
		return redis.NewClusterClient(t.cluster)
	}
	t.single.ContextTimeoutEnabled = true
	t.single.DialerRetries = 1
	return redis.NewClient(t.single)
}

// redisDown reports whether the broker found Redis down (a publish failed, and no
// probe got an answer since): the rate limits then count nothing rather than wait
// for Redis on every request.
func (s *Server) redisDown() bool {
	rb, ok := s.broker.(*realtime.RedisBroker)
	return ok && rb.Down()
}

// redisLogger puts go-redis's own log lines (reconnects, cluster state) into the
// server's slog handler, at WARN.
type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.WarnContext(ctx, strings.TrimSpace(fmt.Sprintf(format, v...)), slog.String("component", "go-redis"))
}
