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
	dir := runDir(t, "evo-rcluster-")
	bin := buildEvo(t, dir)
	pg := startPG(t)
	rc := startRedisCluster(t, dir)
	env := replicaEnv(dir, pg.URL(), rc.URL(), "REDIS_PREFIX=evoc:")
	reps := startReplicas(t, bin, dir, env)
	t.Logf("%5.1fs setup done (build, PostgreSQL, Redis Cluster, replicas)", time.Since(begin).Seconds())
	users := newUsers(t, bin, env, nUsers, "rcluster")

	clientCtx, stopClients := context.WithCancel(context.Background())
	defer stopClients()
	var clientsWG sync.WaitGroup
	clients := startSockets(t, clientCtx, &clientsWG, users, nUsers*perUser, reps, 30*time.Second)
	drops := startDropper(clientCtx, clients, 300*time.Millisecond, 1)
	w := newWorkload(users, reps)
	stopWork := w.start(t, pause)
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
	logs := readLogs(t, pg.URL(), users)
	events := 0
	for _, evs := range logs {
		events += len(evs)
	}
	waitLevel(clients, logs, 30*time.Second)
	stopClients()
	clientsWG.Wait()
	v := verify(t, w, users, clients, logs)
	if lag := lagging(clients, logs); len(lag) > 0 {
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
				"--cluster-node-timeout", "1000", "--dir", dir, "--dbfilename", fmt.Sprintf("dump-%d.rdb", port),
				"--repl-diskless-sync-delay", "0", "--daemonize", "no"}}
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
	// A replica that has not finished its first sync cannot take over: a master
	// killed before that stays down (seen when the setup was quick).
	waitFor(t, "every replica in sync with its master", 30*time.Second, func() bool {
		synced := 0
		for _, n := range rc.nodes {
			if info := n.cli(t, "info", "replication"); strings.Contains(info, "role:slave") && strings.Contains(info, "master_link_status:up") {
				synced++
			}
		}
		return synced == 3
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
