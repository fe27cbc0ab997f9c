//go:build chaos

package chaos

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/evotodo/evo/store"
	"github.com/evotodo/evo/store/postgres"
)

// TestRedisCluster: two replicas of the release binary on a private PostgreSQL and a
// private Redis Cluster of 3 masters and 3 replicas (REDIS_URL=redis+cluster://...,
// sharded pub/sub). Sockets of every user on both replicas (fan-out across replicas
// through the cluster), random socket drops (resume), a stream of changes; then the
// master owning the most of the users' channels is SIGKILLed and its replica takes
// over. At the end every socket's view must equal its user's event log: 0 lost, 0
// duplicated. Short (CI): CLUSTER_USERS (6), CLUSTER_SOCKETS (per user, 8).
func TestRedisCluster(t *testing.T) {
	nUsers := envInt("CLUSTER_USERS", 6)
	perUser := envInt("CLUSTER_SOCKETS", 8)
	pause := 100 * time.Millisecond
	begin := time.Now()
	dir, err := os.MkdirTemp("", "evo-rcluster-")
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
	bin := buildEvo(t, dir)
	pg := startPG(t)
	rc := startRedisCluster(t, dir)

	env := []string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "ENVIRONMENT=development", "HOST=127.0.0.1",
		"DATABASE_URL=" + pg.URL(), "REDIS_URL=" + rc.URL(), "REDIS_PREFIX=evoc:", "DATA_DIR=" + filepath.Join(dir, "data"),
		"PUBLIC_URL=http://evo-chaos.test", "CORS_ORIGINS=http://evo-chaos.test", "DB_MAX_CONNS=10",
		"RATE_LIMIT_WRITES=1000000", "CHAT_RATE_LIMIT=1000000", "WS_MAX_CONNS_PER_USER=1000", "SHUTDOWN_TIMEOUT=5s",
	}
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
	t.Logf("%5.1fs setup done (build, PostgreSQL, Redis Cluster, replicas)", time.Since(begin).Seconds())

	users := make([]*chaosUser, nUsers)
	for i := range users {
		tok := token(t, bin, env, fmt.Sprintf("rcluster%d-%d@example.com", i, time.Now().UnixNano()))
		users[i] = &chaosUser{id: subject(t, tok), token: tok, todos: map[string]*todoModel{}}
	}
	clientCtx, stopClients := context.WithCancel(context.Background())
	defer stopClients()
	var clientsWG sync.WaitGroup
	var clients []*sockClient
	for i := range nUsers * perUser {
		urls := []string{reps[0].WSURL(), reps[1].WSURL()}
		if i%2 == 1 {
			urls[0], urls[1] = urls[1], urls[0]
		}
		c := &sockClient{id: i, user: users[i%nUsers], urls: urls}
		clients = append(clients, c)
		clientsWG.Add(1)
		go c.run(clientCtx, &clientsWG)
	}
	waitFor(t, "every socket connected", 30*time.Second, func() bool {
		for _, c := range clients {
			c.mu.Lock()
			ok := c.connects > 0
			c.mu.Unlock()
			if !ok {
				return false
			}
		}
		return true
	})
	drops := &dropper{clients: clients}
	go drops.run(clientCtx, 300*time.Millisecond, 1)
	w := newWorkload(users, reps)
	workCtx, stopWork := context.WithCancel(context.Background())
	defer stopWork()
	var workWG sync.WaitGroup
	for _, u := range users {
		workWG.Add(1)
		go w.run(workCtx, []*chaosUser{u}, pause, &workWG)
	}
	drops.enabled.Store(true)
	time.Sleep(4 * time.Second)

	// The master holding the most users' channels dies; its replica takes over.
	var ids []string
	for _, u := range users {
		ids = append(ids, u.id)
	}
	victim := rc.busiestMaster(t, ids)
	killed := time.Now()
	victim.kill()
	t.Logf("%5.1fs master %d SIGKILLed", time.Since(begin).Seconds(), victim.port)
	rc.waitFailover(t, victim, 30*time.Second)
	t.Logf("%5.1fs failover done after %v", time.Since(begin).Seconds(), time.Since(killed).Round(time.Millisecond))
	time.Sleep(5 * time.Second)

	drops.enabled.Store(false)
	stopWork()
	workWG.Wait()
	db, err := postgres.Open(context.Background(), pg.URL(), 4)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	logs := map[string][]store.Event{}
	events := 0
	for _, u := range users {
		evs, err := db.EventsSince(context.Background(), u.id, 0, 10_000_000)
		if err != nil {
			t.Fatal(err)
		}
		logs[u.id] = evs
		events += len(evs)
	}
	lagging := func() []string {
		var out []string
		for _, c := range clients {
			if evs := logs[c.user.id]; len(evs) > 0 && c.lastSeq() < evs[len(evs)-1].Seq {
				out = append(out, fmt.Sprintf("socket %d (user %s) at %d of %d", c.id, c.user.id, c.lastSeq(), evs[len(evs)-1].Seq))
			}
		}
		return out
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(lagging()) > 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	stopClients()
	clientsWG.Wait()
	v := verify(t, w, users, clients, logs)
	if lag := lagging(); len(lag) > 0 {
		t.Errorf("%d sockets never caught up, e.g. %s", len(lag), lag[0])
	}
	delivered, replayed := 0, 0
	for _, c := range clients {
		delivered += len(c.got) + c.dups
		replayed += c.replayed
	}
	resubs, outages := 0, 0
	for _, r := range reps {
		b, _ := os.ReadFile(r.log)
		resubs += strings.Count(string(b), "redis pubsub reconnected")
		outages += strings.Count(string(b), "publishing is skipped")
	}
	fmt.Printf("\n=== redis cluster: users %d, sockets %d over 2 replicas, %v\n", nUsers, len(clients), time.Since(begin).Round(time.Second))
	fmt.Printf("  changes committed %d of %d attempted; events in the log %d\n", v.committed, len(w.attempts), events)
	fmt.Printf("  events delivered %d (%d via replay on resume); random drops %d; catch-ups after a resubscribe %d; publish outages logged %d\n", delivered, replayed, drops.drops.Load(), resubs, outages)
	fmt.Printf("  losses: %d\n  duplicates: %d\n  out of order: %d, resyncs: %d\n", v.losses, v.dups, v.gaps, v.resyncs)
	for _, b := range w.bad {
		t.Errorf("API contract: %s", b)
	}
	if v.committed == 0 || delivered == 0 {
		t.Errorf("nothing happened: %d committed, %d delivered", v.committed, delivered)
	}
	if resubs == 0 {
		t.Errorf("no replica logged a resubscription after the master kill")
	}
}

// redisCluster is a private Redis Cluster: 3 masters, 3 replicas, on loopback.
type redisCluster struct {
	nodes []*redisServer
}

func startRedisCluster(t *testing.T, dir string) *redisCluster {
	t.Helper()
	for _, tool := range []string{"redis-server", "redis-cli"} {
		if _, err := exec.LookPath(tool); err != nil {
			required(t, tool, err)
		}
	}
	rc := &redisCluster{}
	var addrs []string
	for range 6 {
		port := freePort(t)
		n := &redisServer{port: port, log: filepath.Join(dir, fmt.Sprintf("redis-%d.log", port)),
			args: []string{"--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(dir, fmt.Sprintf("nodes-%d.conf", port)),
				"--cluster-node-timeout", "1000", "--dir", dir, "--daemonize", "no"}}
		n.start(t)
		t.Cleanup(func() { n.kill() })
		rc.nodes = append(rc.nodes, n)
		addrs = append(addrs, "127.0.0.1:"+strconv.Itoa(port))
	}
	out, err := exec.Command("redis-cli", append(append([]string{"--cluster", "create"}, addrs...), "--cluster-replicas", "1", "--cluster-yes")...).CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	waitFor(t, "cluster state ok on every node", 30*time.Second, func() bool {
		for _, n := range rc.nodes {
			if !strings.Contains(n.cli(t, "cluster", "info"), "cluster_state:ok") {
				return false
			}
		}
		return true
	})
	return rc
}

// URL is the REDIS_URL of the cluster: two seed nodes.
func (rc *redisCluster) URL() string {
	return fmt.Sprintf("redis+cluster://127.0.0.1:%d,127.0.0.1:%d", rc.nodes[0].port, rc.nodes[1].port)
}

// cli runs redis-cli against n and returns its output ("" if it failed).
func (n *redisServer) cli(t testing.TB, args ...string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "redis-cli", append([]string{"-h", "127.0.0.1", "-p", strconv.Itoa(n.port)}, args...)...).Output()
	if err != nil {
		return ""
	}
	return string(out)
}

// busiestMaster returns the master owning the slots of most of users' channels
// (CLUSTER KEYSLOT of the broker's name for them).
func (rc *redisCluster) busiestMaster(t *testing.T, users []string) *redisServer {
	t.Helper()
	count := map[int]int{}
	for _, u := range users {
		name := "evoc:{" + strconv.Itoa(int(fnv32("user:"+u)%128)) + "}user:" + u
		slot, err := strconv.Atoi(strings.TrimSpace(rc.nodes[0].cli(t, "cluster", "keyslot", name)))
		if err != nil {
			t.Fatalf("cluster keyslot: %v", err)
		}
		count[rc.masterOf(t, slot)]++
	}
	best := -1
	for port, n := range count {
		if best < 0 || n > count[best] {
			best = port
		}
	}
	for _, n := range rc.nodes {
		if n.port == best {
			return n
		}
	}
	t.Fatalf("no master %d", best)
	return nil
}

// masterOf returns the port of the master serving slot, per CLUSTER SHARDS-like
// CLUSTER NODES of the first live node.
func (rc *redisCluster) masterOf(t *testing.T, slot int) int {
	t.Helper()
	for _, line := range strings.Split(rc.nodes[0].cli(t, "cluster", "nodes"), "\n") {
		f := strings.Fields(line)
		if len(f) < 9 || !strings.Contains(f[2], "master") {
			continue
		}
		for _, r := range f[8:] {
			lo, hi, _ := strings.Cut(r, "-")
			a, err1 := strconv.Atoi(lo)
			b, err2 := strconv.Atoi(hi)
			if hi == "" {
				b, err2 = a, nil
			}
			if err1 == nil && err2 == nil && a <= slot && slot <= b {
				host, _, _ := strings.Cut(f[1], "@")
				_, p, _ := strings.Cut(host, ":")
				port, _ := strconv.Atoi(p)
				return port
			}
		}
	}
	t.Fatalf("no master serves slot %d", slot)
	return 0
}

// waitFailover waits until the live nodes mark dead as failed, three live masters
// serve the slots and every live node reports the cluster ok.
func (rc *redisCluster) waitFailover(t *testing.T, dead *redisServer, within time.Duration) {
	t.Helper()
	deadAddr := "127.0.0.1:" + strconv.Itoa(dead.port) + "@"
	waitFor(t, "a replica took over", within, func() bool {
		var live []*redisServer
		for _, n := range rc.nodes {
			if n != dead {
				live = append(live, n)
			}
		}
		masters := 0
		for _, line := range strings.Split(live[0].cli(t, "cluster", "nodes"), "\n") {
			f := strings.Fields(line)
			if len(f) < 3 {
				continue
			}
			if strings.HasPrefix(f[1], deadAddr) && !strings.Contains(f[2], "fail") {
				return false
			}
			if strings.Contains(f[2], "master") && !strings.Contains(f[2], "fail") {
				masters++
			}
		}
		if masters != 3 {
			return false
		}
		for _, n := range live {
			if !strings.Contains(n.cli(t, "cluster", "info"), "cluster_state:ok") {
				return false
			}
		}
		return true
	})
}

// fnv32 is realtime's hash of a channel (realtime/hub.go), for the bucket of a channel.
func fnv32(s string) uint32 {
	hash := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		hash ^= uint32(s[i])
		hash *= 16777619
	}
	return hash
}
