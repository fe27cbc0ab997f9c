//go:build chaos

package chaos

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/evotodo/evo/store"
	"github.com/evotodo/evo/store/postgres"
)

// The set-up and the end that TestChaos and TestRedisCluster share.

// runDir makes the run directory (logs of every process); it is removed at
// the end unless the test failed or CHAOS_KEEP is set.
func runDir(t *testing.T, pattern string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", pattern)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("CHAOS_KEEP") != "" {
			t.Logf("run directory (logs): %s", dir)
			return
		}
		os.RemoveAll(dir)
	})
	return dir
}

// replicaEnv is the environment of the replicas and of `evo token`: the
// given PostgreSQL and Redis, the dev issuer (DEV_AUTH: it signs the users'
// tokens), limits out of the workload's way, and extra.
func replicaEnv(dir, databaseURL, redisURL string, extra ...string) []string {
	return append([]string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "ENVIRONMENT=development", "DEV_AUTH=true", "HOST=127.0.0.1",
		"DATABASE_URL=" + databaseURL, "REDIS_URL=" + redisURL, "DATA_DIR=" + filepath.Join(dir, "data"),
		"PUBLIC_URL=http://evo-chaos.test", "CORS_ORIGINS=http://evo-chaos.test", "DB_MAX_CONNS=10",
		"RATE_LIMIT_WRITES=1000000", "CHAT_RATE_LIMIT=1000000", "WS_MAX_CONNS_PER_USER=1000", "SHUTDOWN_TIMEOUT=5s",
	}, extra...)
}

// startReplicas starts two replicas of bin (logs evo1.log, evo2.log in dir),
// stopped at the end, and waits until both are ready. The first starts alone:
// it creates the dev signing key and runs the migrations.
func startReplicas(t *testing.T, bin, dir string, env []string) []*replica {
	t.Helper()
	var reps []*replica
	for i := range 2 {
		reps = append(reps, &replica{name: fmt.Sprintf("evo%d", i+1), bin: bin, port: freePort(t), env: env,
			log: filepath.Join(dir, fmt.Sprintf("evo%d.log", i+1))})
	}
	t.Cleanup(func() {
		for _, r := range reps {
			r.stop()
		}
	})
	reps[0].start(t)
	reps[0].waitReady(t, "/health", 60*time.Second)
	reps[1].start(t)
	for _, r := range reps {
		r.waitReady(t, "/ready", 60*time.Second)
	}
	return reps
}

// newUsers makes n users (emails <prefix><i>-<nanoseconds>@example.com) with
// tokens from `evo token`.
func newUsers(t *testing.T, bin string, env []string, n int, prefix string) []*chaosUser {
	t.Helper()
	users := make([]*chaosUser, n)
	for i := range users {
		tok := token(t, bin, env, fmt.Sprintf("%s%d-%d@example.com", prefix, i, time.Now().UnixNano()))
		users[i] = &chaosUser{id: subject(t, tok), token: tok, todos: map[string]*todoModel{}}
	}
	return users
}

// readLogs returns every user's event log from the database.
func readLogs(t *testing.T, databaseURL string, users []*chaosUser) map[string][]store.Event {
	t.Helper()
	db, err := postgres.Open(context.Background(), databaseURL, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	logs := map[string][]store.Event{}
	for _, u := range users {
		evs, err := db.EventsSince(context.Background(), u.id, 0, 10_000_000)
		if err != nil {
			t.Fatal(err)
		}
		logs[u.id] = evs
	}
	return logs
}

// lagging lists the sockets whose last seq is behind their user's log.
func lagging(clients []*sockClient, logs map[string][]store.Event) []string {
	var out []string
	for _, c := range clients {
		if evs := logs[c.user.id]; len(evs) > 0 && c.lastSeq() < evs[len(evs)-1].Seq {
			out = append(out, fmt.Sprintf("socket %d (user %s) at %d of %d", c.id, c.user.id, c.lastSeq(), evs[len(evs)-1].Seq))
		}
	}
	return out
}

// waitLevel waits up to within for every socket to be level with its user's
// log (the test checks lagging again after the verification).
func waitLevel(clients []*sockClient, logs map[string][]store.Event, within time.Duration) {
	deadline := time.Now().Add(within)
	for len(lagging(clients, logs)) > 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
}
