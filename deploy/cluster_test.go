package deploy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/evotodo/evo/store/storetest"
)

// TestCluster runs the production topology of deploy/cluster.sh (two
// replicas behind nginx, PostgreSQL, Redis) and checks, through nginx:
// REST; fan-out across replicas; a replica stopped under open sockets
// (1001, reconnect through nginx to the survivor, resume: every change once,
// in order); the replica's restart; and a stop that leaves nothing behind.
func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs nginx; not in -short")
	}
	requireNginx(t)
	redisURL := requireRedis(t)
	c := startCluster(t, map[string]string{
		"CLUSTER_DATABASE_URL": storetest.PostgresURL(t),
		"CLUSTER_REDIS_URL":    redisURL,
	})

	tok := c.token(t, "cluster-"+strconv.FormatInt(time.Now().UnixNano(), 36)+"@example.com")
	lb := c.url(c.nginxPort)
	r1, r2 := c.url(c.ports[0]), c.url(c.ports[1])

	// REST through nginx.
	for _, path := range []string{"/health", "/ready"} {
		if status, body := do(t, "GET", lb+path, "", nil); status != http.StatusOK {
			t.Fatalf("GET %s through nginx: %d %s", path, status, body)
		}
	}
	if status, _ := do(t, "GET", lb+"/api/todos", "", nil); status != http.StatusUnauthorized {
		t.Fatalf("GET /api/todos without a token through nginx: got %d, want 401", status)
	}
	// The dev token is good on both replicas (shared DATA_DIR and PUBLIC_URL).
	for _, base := range []string{lb, r1, r2} {
		if status, body := do(t, "GET", base+"/api/todos", tok, nil); status != http.StatusOK || !strings.Contains(body, `"total":0`) {
			t.Fatalf("GET %s/api/todos: %d %s", base, status, body)
		}
	}

	// The Origin header reaches the replicas: the balancer's own origin (the
	// console at /) may open a socket, another site may not.
	for origin, want := range map[string]int{"http://localhost:" + strconv.Itoa(c.nginxPort): http.StatusSwitchingProtocols, "http://evil.example": http.StatusForbidden} {
		h := http.Header{"Authorization": {"Bearer " + tok}, "Origin": {origin}}
		ws, resp, _ := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(lb, "http")+"/ws", h)
		if ws != nil {
			ws.Close()
		}
		if resp == nil || resp.StatusCode != want {
			t.Fatalf("/ws through nginx with Origin %s: got %v, want %d", origin, resp, want)
		}
	}

	// Sockets: one directly on each replica, four through nginx. nginx (one
	// worker, round robin) puts consecutive sockets on alternate replicas.
	d1, d2 := dial(t, r1, tok, 0), dial(t, r2, tok, 0)
	var lbs []*follower
	for i := range 4 {
		// Two reconnect at once on 1001, two wait for the test (to have
		// changes to replay); each replica holds one of each.
		lbs = append(lbs, follow(t, fmt.Sprintf("lb%d", i+1), lb, tok, i < 2))
	}

	// Fan-out: a change through nginx, one on replica 1, one on replica 2.
	var seq int64
	change := func(base, method, path string, body any, want int) string {
		t.Helper()
		status, resp := do(t, method, base+path, tok, body)
		if status != want {
			t.Fatalf("%s %s%s: got %d %s, want %d", method, base, path, status, resp, want)
		}
		seq++
		return resp
	}
	create := func(base, title string) string {
		t.Helper()
		var todo struct{ ID string }
		json.Unmarshal([]byte(change(base, "POST", "/api/todos", map[string]string{"title": title}, http.StatusCreated)), &todo)
		return todo.ID
	}
	create(lb, "through nginx")
	create(r1, "on replica 1")
	create(r2, "on replica 2")
	for _, d := range []*conn{d1, d2} {
		for _, want := range []string{"through nginx", "on replica 1", "on replica 2"} {
			if f := d.next(); f.Type != "todo.created" || f.Todo.Title != want {
				t.Fatalf("%s: got %+v, want todo.created %q", d.name, f, want)
			}
		}
	}
	for _, f := range lbs {
		f.waitSeq(t, seq)
	}

	// Failover: SIGTERM replica 1 with all the sockets open.
	pid := c.pid(t, "evo1")
	term := time.Now()
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	d1.expectClose(websocket.CloseGoingAway)
	closed := time.Since(term)
	waitGone(t, pid, 15*time.Second)
	exited := time.Since(term)
	// The 1001s went out before the exit; wait until the readers have seen
	// them (no new one for 300ms).
	var moved []*follower
	for stable, deadline := time.Now(), time.Now().Add(5*time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		var away []*follower
		for _, f := range lbs {
			if f.goingAway() {
				away = append(away, f)
			}
		}
		if len(away) != len(moved) {
			moved, stable = away, time.Now()
		}
		if len(moved) > 0 && time.Since(stable) > 300*time.Millisecond {
			break
		}
	}
	if len(moved) == 0 {
		t.Fatal("no socket through nginx was on replica 1: nginx did not spread them")
	}
	t.Logf("SIGTERM replica 1: direct socket closed 1001 after %v, process gone after %v; %d of %d sockets through nginx got 1001",
		closed.Round(100*time.Microsecond), exited.Round(100*time.Microsecond), len(moved), len(lbs))

	// The outage: replica 1 is gone, changes go through nginx.
	if _, err := http.Get(r1 + "/health"); err == nil {
		t.Fatal("replica 1 still answers after its exit")
	}
	outageStart := seq + 1
	var ids []string
	for i := range 4 {
		ids = append(ids, create(lb, fmt.Sprintf("during outage %d", i)))
	}
	change(lb, "PUT", "/api/todos/"+ids[0], map[string]string{"title": "renamed during outage"}, http.StatusOK)
	change(lb, "PATCH", "/api/todos/"+ids[1], map[string]bool{"is_complete": true}, http.StatusOK)
	change(lb, "DELETE", "/api/todos/"+ids[2], nil, http.StatusNoContent)
	change(lb, "DELETE", "/api/todos/"+ids[3], nil, http.StatusNoContent)
	outageEnd := seq

	// The held sockets reconnect now, through nginx, and resume.
	for _, f := range lbs {
		f.release()
	}
	for _, f := range moved {
		f.waitReconnected(t)
	}
	create(lb, "after failover")
	create(lb, "after failover 2")
	for _, f := range lbs {
		f.waitSeq(t, seq)
	}
	for i := int64(4); i <= seq; i++ {
		if f := d2.next(); f.Seq != i {
			t.Fatalf("%s: got %+v, want seq %d", d2.name, f, i)
		}
	}
	for _, f := range lbs {
		f.check(t, seq)
	}
	if !slices.ContainsFunc(moved, func(f *follower) bool { return f.held }) {
		t.Fatal("no held socket was on replica 1: nginx did not alternate (worker_processes 1, round robin)")
	}
	for _, f := range moved {
		r := f.stats()
		t.Logf("%s: reconnected through nginx %v after its 1001 (attempts: %d, failed: %q), replayed %d",
			f.name, r.took.Round(100*time.Microsecond), r.attempts, r.failures, r.replayed)
		if f.held && r.replayed != int(outageEnd-outageStart+1) {
			t.Errorf("%s: resume replayed %d events, want the %d made during the outage", f.name, r.replayed, outageEnd-outageStart+1)
		}
	}

	// Restart replica 1: nginx sends to it again, its sockets get fan-out.
	restart := time.Now()
	c.run(t, map[string]string{"EVO_BIN": filepath.Join(c.dir, "evo")}, "start")
	t.Logf("replica 1 restarted and ready through nginx in %v", time.Since(restart).Round(time.Millisecond))
	if status, body := do(t, "GET", r1+"/ready", "", nil); status != http.StatusOK {
		t.Fatalf("replica 1 /ready after restart: %d %s", status, body)
	}
	if status, body := do(t, "GET", lb+"/ready", "", nil); status != http.StatusOK {
		t.Fatalf("/ready through nginx after restart: %d %s", status, body)
	}
	d1 = dial(t, r1, tok, seq)
	create(lb, "after restart")
	create(r2, "on replica 2 after restart")
	for _, want := range []int64{seq - 1, seq} {
		if f := d1.next(); f.Seq != want {
			t.Fatalf("restarted replica 1: got %+v, want seq %d", f, want)
		}
	}
	for _, f := range lbs {
		f.waitSeq(t, seq)
		f.check(t, seq)
		f.stop()
	}
	d1.conn.Close()
	d2.conn.Close()

	// Stop: nothing may be left.
	pids := []int{c.pid(t, "evo1"), c.pid(t, "evo2"), c.pid(t, "nginx")}
	pids = append(pids, children(pids[2])...)
	stop := time.Now()
	c.run(t, nil, "stop")
	t.Logf("cluster stopped in %v", time.Since(stop).Round(time.Millisecond))
	for _, pid := range pids {
		if alive(pid) {
			t.Errorf("pid %d still running after stop", pid)
		}
	}
	for _, port := range append(c.ports[:], c.nginxPort) {
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			t.Errorf("port %d not free after stop: %v", port, err)
			continue
		}
		ln.Close()
	}
	for _, name := range []string{"evo1", "evo2", "nginx"} {
		if _, err := os.Stat(filepath.Join(c.dir, name+".pid")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s.pid left after stop (%v)", name, err)
		}
	}
	if out, err := c.script(nil, "status"); err == nil {
		t.Errorf("status after stop exits 0:\n%s", out)
	}
}

// requireNginx skips (fails in CI) without nginx.
func requireNginx(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("nginx"); err != nil {
		if _, serr := os.Stat("/usr/sbin/nginx"); serr != nil {
			storetest.Unreachable(t, "nginx (apt-get install nginx-light)", err)
		}
	}
}

// requireRedis returns the local Redis URL, skipping (failing in CI) without one.
func requireRedis(t *testing.T) string {
	t.Helper()
	url := "redis://127.0.0.1:6379/0"
	opts, _ := redis.ParseURL(url)
	rc := redis.NewClient(opts)
	defer rc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := rc.Ping(ctx).Err(); err != nil {
		storetest.Unreachable(t, "Redis ("+url+")", err)
	}
	return url
}

// cluster is a deploy/cluster.sh cluster in its own run dir on free ports.
type cluster struct {
	dir       string
	ports     [2]int
	nginxPort int
	env       []string
}

func startCluster(t *testing.T, env map[string]string) *cluster {
	t.Helper()
	ports := freePorts(t, 3)
	c := &cluster{dir: t.TempDir(), ports: [2]int{ports[0], ports[1]}, nginxPort: ports[2]}
	vars := map[string]string{
		"CLUSTER_DIR":          c.dir,
		"EVO_PORT_1":           strconv.Itoa(ports[0]),
		"EVO_PORT_2":           strconv.Itoa(ports[1]),
		"NGINX_PORT":           strconv.Itoa(ports[2]),
		"SHUTDOWN_TIMEOUT":     "5s",
		"CLUSTER_STOP_TIMEOUT": "10",
	}
	for k, v := range env {
		vars[k] = v
	}
	c.env = os.Environ()
	for k, v := range vars {
		c.env = append(c.env, k+"="+v)
	}
	t.Cleanup(func() {
		if out, err := c.script(nil, "stop"); err != nil {
			t.Errorf("cluster.sh stop: %v\n%s", err, out)
		}
		if t.Failed() {
			for _, name := range []string{"evo1.log", "evo2.log", "nginx.log", "nginx/logs/error.log"} {
				t.Logf("%s (end):\n%s", name, tail(filepath.Join(c.dir, name), 15))
			}
		}
	})
	start := time.Now()
	c.run(t, nil, "start")
	t.Logf("cluster started (build included) in %v", time.Since(start).Round(time.Millisecond))
	return c
}

// script runs deploy/cluster.sh with the cluster's environment plus env.
func (c *cluster) script(env map[string]string, args ...string) (string, error) {
	cmd := exec.Command("bash", append([]string{"cluster.sh"}, args...)...)
	cmd.Env = slices.Clone(c.env)
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 5 * time.Second // a child that kept our pipe open must not hang the test
	err := cmd.Run()
	return out.String(), err
}

func (c *cluster) run(t *testing.T, env map[string]string, args ...string) {
	t.Helper()
	if out, err := c.script(env, args...); err != nil {
		t.Fatalf("cluster.sh %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// token runs the cluster's binary's token subcommand with the cluster's
// settings (cluster.env), as the start message tells a person to.
func (c *cluster) token(t *testing.T, email string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(c.dir, "evo"), "token", "--email", email)
	cmd.Dir = c.dir
	cmd.Env = append(slices.Clone(c.env), readEnvFile(t, filepath.Join(c.dir, "cluster.env"))...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("evo token: %v\n%s", err, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

func (c *cluster) pid(t *testing.T, name string) int {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(c.dir, name+".pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		t.Fatalf("%s.pid: %v", name, err)
	}
	return pid
}

func (c *cluster) url(port int) string { return "http://127.0.0.1:" + strconv.Itoa(port) }

// readEnvFile reads KEY='value' lines.
func readEnvFile(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var env []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		k, v, ok := strings.Cut(line, "=")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		env = append(env, k+"="+strings.Trim(v, "'"))
	}
	return env
}

func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		ln.Close()
	}
	return ports
}

// alive reports whether pid runs (a zombie does not: PID 1 here may not reap
// the orphans cluster.sh leaves when it exits).
func alive(pid int) bool {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(data)
	if i := strings.LastIndex(s, ") "); i >= 0 {
		s = s[i+2:]
	}
	return !strings.HasPrefix(s, "Z")
}

func waitGone(t *testing.T, pid int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("pid %d still running %v after SIGTERM", pid, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func children(pid int) []int {
	out, _ := exec.Command("ps", "-o", "pid=", "--ppid", strconv.Itoa(pid)).Output()
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		if p, err := strconv.Atoi(f); err == nil {
			pids = append(pids, p)
		}
	}
	return pids
}

func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

var client = &http.Client{Timeout: 10 * time.Second}

// do sends a JSON request and returns the status and body.
func do(t *testing.T, method, url, token string, body any) (int, string) {
	t.Helper()
	var r io.Reader
	if body != nil {
		data, _ := json.Marshal(body)
		r = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(data)
}

// frame is a server frame, decoded loosely.
type frame struct {
	Type     string `json:"type"`
	Seq      int64  `json:"seq"`
	Replayed int    `json:"replayed"`
	Todo     struct {
		ID    string `json:"id"`
		Title string `json:"title"`
	} `json:"todo"`
}

// conn is a socket read by the test goroutine.
type conn struct {
	t    *testing.T
	name string
	conn *websocket.Conn
}

// dialWS opens /ws?since= on base (resume at connect) and reads hello; it returns
// the socket, the replayed events and the error of any step.
func dialWS(base, token string, since int64) (*websocket.Conn, []frame, error) {
	h := http.Header{"Authorization": {"Bearer " + token}}
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	ws, resp, err := d.Dial("ws"+strings.TrimPrefix(base, "http")+"/ws?since="+strconv.FormatInt(since, 10), h)
	if err != nil {
		if resp != nil {
			err = fmt.Errorf("%w (status %d)", err, resp.StatusCode)
		}
		return nil, nil, err
	}
	fail := func(err error) (*websocket.Conn, []frame, error) {
		ws.Close()
		return nil, nil, err
	}
	if f, err := readFrame(ws, 5*time.Second); err != nil || f.Type != "hello" {
		return fail(fmt.Errorf("hello: %+v %w", f, err))
	}
	var replayed []frame
	for {
		f, err := readFrame(ws, 5*time.Second)
		if err != nil {
			return fail(fmt.Errorf("resume: %w", err))
		}
		if f.Type == "resumed" {
			if f.Replayed != len(replayed) {
				return fail(fmt.Errorf("resumed says %d replayed, got %d", f.Replayed, len(replayed)))
			}
			return ws, replayed, nil
		}
		replayed = append(replayed, f)
	}
}

func readFrame(ws *websocket.Conn, within time.Duration) (frame, error) {
	ws.SetReadDeadline(time.Now().Add(within))
	_, data, err := ws.ReadMessage()
	if err != nil {
		return frame{}, err
	}
	var f frame
	if err := json.Unmarshal(data, &f); err != nil {
		return frame{}, fmt.Errorf("decode %s: %w", data, err)
	}
	return f, nil
}

// dial opens a socket on base that resumed from since (the latest seq).
func dial(t *testing.T, base, token string, since int64) *conn {
	t.Helper()
	ws, replayed, err := dialWS(base, token, since)
	if err != nil {
		t.Fatalf("dial %s: %v", base, err)
	}
	t.Cleanup(func() { ws.Close() })
	c := &conn{t: t, name: "socket on " + base, conn: ws}
	if len(replayed) != 0 {
		t.Fatalf("%s: resume(%d) replayed %+v, want nothing", c.name, since, replayed)
	}
	return c
}

func (c *conn) next() frame {
	c.t.Helper()
	f, err := readFrame(c.conn, 5*time.Second)
	if err != nil {
		c.t.Fatalf("%s: %v", c.name, err)
	}
	return f
}

func (c *conn) expectClose(code int) {
	c.t.Helper()
	for {
		_, err := readFrame(c.conn, 10*time.Second)
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != code {
			c.t.Fatalf("%s: got %v, want close %d", c.name, err, code)
		}
		return
	}
}

// reconnect describes how a follower came back after a 1001.
type reconnect struct {
	took     time.Duration // from the 1001 to resumed, excluding a held wait
	attempts int
	failures []string // why the attempts before the last one failed
	replayed int
}

// follower is a socket through nginx read by its own goroutine, like a
// client: it records every event and, when closed with 1001, reconnects
// through nginx (at once, or once released if held) and resumes from the
// last seq it saw.
type follower struct {
	name, base, token string
	held              bool
	released          chan struct{}
	done              chan struct{}

	mu       sync.Mutex
	ws       *websocket.Conn
	seqs     []int64
	away     bool // got a 1001
	stopped  bool
	err      error
	rec      reconnect
	progress chan struct{} // closed and replaced on each new event
}

func follow(t *testing.T, name, base, token string, eager bool) *follower {
	t.Helper()
	ws, replayed, err := dialWS(base, token, 0)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if len(replayed) != 0 {
		t.Fatalf("%s: resume(0) replayed %+v on an empty log", name, replayed)
	}
	f := &follower{name: name, base: base, token: token, held: !eager, ws: ws,
		released: make(chan struct{}), done: make(chan struct{}), progress: make(chan struct{})}
	go f.run()
	t.Cleanup(f.stop)
	return f
}

func (f *follower) run() {
	defer close(f.done)
	for {
		f.mu.Lock()
		ws := f.ws
		f.mu.Unlock()
		fr, err := readFrame(ws, time.Minute)
		if err == nil {
			f.record(fr)
			continue
		}
		f.mu.Lock()
		stopped := f.stopped
		f.mu.Unlock()
		var ce *websocket.CloseError
		switch {
		case stopped:
			return
		case !errors.As(err, &ce) || ce.Code != websocket.CloseGoingAway:
			f.fail(fmt.Errorf("read: %w", err))
			return
		}
		f.mu.Lock()
		first := !f.away
		f.away = true
		f.mu.Unlock()
		if !first {
			f.fail(errors.New("a second 1001"))
			return
		}
		if f.held {
			<-f.released
		}
		if err := f.reconnect(); err != nil {
			f.fail(err)
			return
		}
	}
}

// reconnect dials through nginx until a socket resumes: right after a 1001
// nginx may still pick the stopping replica, which accepts and closes again.
func (f *follower) reconnect() error {
	start := time.Now()
	var failures []string
	for attempt := 1; ; attempt++ {
		f.mu.Lock()
		last := int64(len(f.seqs))
		f.mu.Unlock()
		ws, replayed, err := dialWS(f.base, f.token, last)
		if err == nil {
			for _, fr := range replayed {
				f.record(fr)
			}
			f.mu.Lock()
			f.ws = ws
			f.rec = reconnect{took: time.Since(start), attempts: attempt, failures: failures, replayed: len(replayed)}
			if f.stopped {
				ws.Close()
			}
			f.mu.Unlock()
			return nil
		}
		if time.Since(start) > 15*time.Second {
			return fmt.Errorf("reconnect: %d attempts in %v, last: %w", attempt, time.Since(start), err)
		}
		failures = append(failures, err.Error())
		time.Sleep(50 * time.Millisecond)
	}
}

func (f *follower) record(fr frame) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !strings.HasPrefix(fr.Type, "todo.") {
		return
	}
	f.seqs = append(f.seqs, fr.Seq)
	close(f.progress)
	f.progress = make(chan struct{})
}

func (f *follower) fail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err == nil {
		f.err = fmt.Errorf("%s: %w", f.name, err)
	}
	close(f.progress)
	f.progress = make(chan struct{})
}

func (f *follower) goingAway() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.away
}

func (f *follower) stats() reconnect {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rec
}

func (f *follower) release() {
	select {
	case <-f.released:
	default:
		close(f.released)
	}
}

// waitReconnected waits until the follower resumed on a new socket.
func (f *follower) waitReconnected(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for f.stats().attempts == 0 {
		f.mu.Lock()
		err := f.err
		f.mu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reconnected after 15s", f.name)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitSeq waits until the follower has seen seq events.
func (f *follower) waitSeq(t *testing.T, seq int64) {
	t.Helper()
	timeout := time.After(15 * time.Second)
	for {
		f.mu.Lock()
		n, err, progress := int64(len(f.seqs)), f.err, f.progress
		f.mu.Unlock()
		switch {
		case err != nil:
			t.Fatal(err)
		case n >= seq:
			return
		}
		select {
		case <-progress:
		case <-timeout:
			t.Fatalf("%s: %d events after 15s, want %d", f.name, n, seq)
		}
	}
}

// check: every seq from 1 to seq exactly once, in order.
func (f *follower) check(t *testing.T, seq int64) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		t.Fatal(f.err)
	}
	for i, s := range f.seqs {
		if s != int64(i+1) {
			t.Fatalf("%s: events %v: want 1..%d, each once, in order", f.name, f.seqs, seq)
		}
	}
	if int64(len(f.seqs)) != seq {
		t.Fatalf("%s: %d events, want %d", f.name, len(f.seqs), seq)
	}
}

func (f *follower) stop() {
	f.mu.Lock()
	if f.stopped {
		f.mu.Unlock()
		return
	}
	f.stopped = true
	ws := f.ws
	f.mu.Unlock()
	f.release()
	ws.Close()
	select {
	case <-f.done:
	case <-time.After(20 * time.Second):
	}
}
