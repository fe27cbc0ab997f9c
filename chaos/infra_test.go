//go:build chaos

package chaos

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The infrastructure of the chaos test, all private to it: PostgreSQL is a
// cluster of its own (initdb in a temporary directory, its own port), Redis
// a redis-server of its own, the replicas processes of the release binary.
// Faults are real: pg_ctl stop -m immediate, SIGKILL.

// freePort returns a TCP port free on 127.0.0.1 right now.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// required fails (in CI) or skips the test when a tool is missing.
func required(t testing.TB, what string, err error) {
	t.Helper()
	if os.Getenv("CI") != "" || os.Getenv("EVO_REQUIRE_BACKENDS") != "" {
		t.Fatalf("%s is required for the chaos test: %v", what, err)
	}
	t.Skipf("SKIP: %s: %v", what, err)
}

// repoRoot is the module root (the chaos package is one level down).
func repoRoot(t testing.TB) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Dir(wd)
}

// buildEvo builds the release binary (make build's flags) into dir, or
// returns CHAOS_BIN.
func buildEvo(t testing.TB, dir string) string {
	t.Helper()
	if b := os.Getenv("CHAOS_BIN"); b != "" {
		return b
	}
	bin := filepath.Join(dir, "evo")
	args := []string{"build", "-trimpath", "-o", bin}
	if os.Getenv("CHAOS_RACE") != "" {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, ".")...)
	cmd.Dir = repoRoot(t)
	if os.Getenv("CHAOS_RACE") == "" {
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

// --- PostgreSQL ---

// pgCluster is a private PostgreSQL cluster. As root it runs as the
// postgres OS user (initdb refuses root).
type pgCluster struct {
	bin, dir, data, log string
	port                int
	cred                *syscall.Credential
}

func pgBinDir(t testing.TB) string {
	t.Helper()
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int { return pgVersion(b) - pgVersion(a) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p)
	}
	required(t, "PostgreSQL server binaries (initdb, pg_ctl)", fmt.Errorf("not in /usr/lib/postgresql/*/bin or PATH"))
	return ""
}

func pgVersion(dir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
	return n
}

func startPG(t testing.TB) *pgCluster {
	t.Helper()
	pg := &pgCluster{bin: pgBinDir(t), port: freePort(t)}
	dir, err := os.MkdirTemp("", "evo-chaos-pg-")
	if err != nil {
		t.Fatal(err)
	}
	pg.dir, pg.data, pg.log = dir, filepath.Join(dir, "data"), filepath.Join(dir, "postgres.log")
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			required(t, "the postgres OS user (initdb does not run as root)", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		pg.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		pg.run("pg_ctl", "-D", pg.data, "-m", "immediate", "-w", "stop")
		os.RemoveAll(dir)
	})
	if out, err := pg.run("initdb", "-D", pg.data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	pg.start(t)
	return pg
}

func (pg *pgCluster) run(name string, args ...string) ([]byte, error) {
	cmd := exec.Command(filepath.Join(pg.bin, name), args...)
	cmd.Dir = pg.dir
	if pg.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: pg.cred}
	}
	return cmd.CombinedOutput()
}

// URL is the cluster's postgres database.
func (pg *pgCluster) URL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", pg.port)
}

func (pg *pgCluster) start(t testing.TB) {
	t.Helper()
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c max_connections=200", pg.port, pg.dir)
	if out, err := pg.run("pg_ctl", "-D", pg.data, "-l", pg.log, "-o", opts, "-w", "-t", "60", "start"); err != nil {
		t.Fatalf("pg_ctl start: %v\n%s\n%s", err, out, tail(pg.log, 20))
	}
}

// stop stops the cluster like a crash: every backend is killed at once, and
// the next start replays the WAL. Commits acknowledged before stay.
func (pg *pgCluster) stop(t testing.TB) {
	t.Helper()
	if out, err := pg.run("pg_ctl", "-D", pg.data, "-m", "immediate", "-w", "stop"); err != nil {
		t.Fatalf("pg_ctl stop: %v\n%s", err, out)
	}
}

// --- Redis ---

// redisServer is a private redis-server; restart kills it (SIGKILL) and
// starts a new one on the same port.
type redisServer struct {
	port int
	log  string
	args []string // more redis-server arguments (a cluster node's)
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

func startRedis(t testing.TB, dir string) *redisServer {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		required(t, "redis-server", err)
	}
	r := &redisServer{port: freePort(t), log: filepath.Join(dir, "redis.log")}
	r.start(t)
	t.Cleanup(func() { r.kill() })
	return r
}

func (r *redisServer) URL() string { return fmt.Sprintf("redis://127.0.0.1:%d/0", r.port) }

func (r *redisServer) start(t testing.TB) {
	t.Helper()
	cmd := exec.Command("redis-server", "--port", strconv.Itoa(r.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--protected-mode", "no")
	cmd.Args = append(cmd.Args, r.args...)
	done := startLogged(t, cmd, r.log, "")
	r.mu.Lock()
	r.cmd, r.done = cmd, done
	r.mu.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", r.port), time.Second); err == nil {
			fmt.Fprint(c, "PING\r\n")
			c.SetReadDeadline(time.Now().Add(time.Second))
			line, _ := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if strings.HasPrefix(line, "+PONG") {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis-server on %d did not answer within 10s:\n%s", r.port, tail(r.log, 20))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (r *redisServer) kill() {
	r.mu.Lock()
	cmd, done := r.cmd, r.done
	r.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

// --- replicas ---

// replica is one evo serve process on a fixed port.
type replica struct {
	name string
	bin  string
	port int
	env  []string
	log  string
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

func (r *replica) URL() string   { return fmt.Sprintf("http://127.0.0.1:%d", r.port) }
func (r *replica) WSURL() string { return fmt.Sprintf("ws://127.0.0.1:%d/ws", r.port) }

func (r *replica) start(t testing.TB) {
	t.Helper()
	cmd := exec.Command(r.bin, "serve")
	cmd.Env = append(r.env, "PORT="+strconv.Itoa(r.port))
	done := startLogged(t, cmd, r.log, fmt.Sprintf("=== %s chaos: starting %s\n", time.Now().UTC().Format(time.RFC3339Nano), r.name))
	r.mu.Lock()
	r.cmd, r.done = cmd, done
	r.mu.Unlock()
}

// waitReady waits for GET path to answer 200.
func (r *replica) waitReady(t testing.TB, path string, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	c := &http.Client{Timeout: 2 * time.Second}
	for {
		resp, err := c.Get(r.URL() + path)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Since(start)
			}
		}
		select {
		case <-r.exited():
			t.Fatalf("%s exited:\n%s", r.name, tail(r.log, 30))
		default:
		}
		if time.Since(start) > within {
			t.Fatalf("%s: no 200 from %s within %v:\n%s", r.name, path, within, tail(r.log, 30))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (r *replica) exited() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.done
}

// signal sends sig and waits up to wait for the process to exit.
func (r *replica) signal(sig syscall.Signal, wait time.Duration) bool {
	r.mu.Lock()
	cmd, done := r.cmd, r.done
	r.mu.Unlock()
	if cmd == nil {
		return true
	}
	cmd.Process.Signal(sig)
	select {
	case <-done:
		return true
	case <-time.After(wait):
		return false
	}
}

// stop ends the replica gracefully (SIGTERM), SIGKILL after 20 s.
func (r *replica) stop() {
	if !r.signal(syscall.SIGTERM, 20*time.Second) {
		r.signal(syscall.SIGKILL, 10*time.Second)
	}
}

// token runs `evo token` against the cluster's database and signing key.
func token(t testing.TB, bin string, env []string, email string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "token", "--email", email, "--ttl", "2h")
	cmd.Env = env
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("evo token: %v %s", err, stderr)
	}
	return strings.TrimSpace(string(out))
}

// startLogged starts cmd with its output (after banner) appended to the file logPath and
// returns a channel closed when it exits.
func startLogged(t testing.TB, cmd *exec.Cmd, logPath, banner string) chan struct{} {
	t.Helper()
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(logf, banner)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(done) }()
	return done
}
