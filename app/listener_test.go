package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestIdleConnectionsAreClosed: a connection that never sends a byte is closed
// once REQUEST_TIMEOUT has passed (it used to stay open forever), the server goes
// on answering, and a WebSocket, idle for longer than that, is not cut.
func TestIdleConnectionsAreClosed(t *testing.T) {
	ts := startServer(t, "sqlite", map[string]string{"REQUEST_TIMEOUT": "2s"})
	_, tok := ts.user(t)
	ws := dialWS(t, ts, tok)
	ws.expectType("hello")

	addr := strings.TrimPrefix(ts.URL, "http://")
	var idle []net.Conn
	for range 40 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		idle = append(idle, c)
	}
	start := time.Now()
	for i, c := range idle {
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		n, err := c.Read(make([]byte, 1))
		var ne net.Error
		if n > 0 || err == nil || errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("idle connection %d: read %d bytes, %v after %v; want it closed by the server", i, n, err, time.Since(start))
		}
	}
	t.Logf("40 idle connections closed %v after they opened", time.Since(start).Round(time.Millisecond))

	if status, body := ts.do(t, "GET", "/health", "", nil); status != http.StatusOK {
		t.Fatalf("health after the idle connections: %d %s", status, body)
	}
	// The socket has been idle for over REQUEST_TIMEOUT: it still answers.
	ws.send(map[string]string{"type": "ping"})
	ws.expectType("pong")
}

// TestServeSurvivesRunningOutOfFileDescriptors runs `evo serve` (Run, in a
// child process of this test binary) with RLIMIT_NOFILE at 64 and opens 150
// connections that send nothing. Accept fails with EMFILE; the server used to exit
// on that ("too many open files"). Now it logs, retries with backoff, sheds the idle
// connections after REQUEST_TIMEOUT and answers again.
func TestServeSurvivesRunningOutOfFileDescriptors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	addr := "127.0.0.1:" + strconv.Itoa(port)

	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperServeWithFewFiles$")
	cmd.Dir = t.TempDir() // no .env there
	cmd.Env = append(os.Environ(), "EVO_TEST_SERVE_NOFILE=64", "ENVIRONMENT=test", "HOST=127.0.0.1",
		"PORT="+strconv.Itoa(port), "DATA_DIR="+cmd.Dir, "REQUEST_TIMEOUT=2s", "DATABASE_URL=", "REDIS_URL=", "BETTER_AUTH_URL=")
	var stderr syncBuffer
	cmd.Stderr, cmd.Stdout = &stderr, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
		}
	})
	health := func() (int, error) {
		c := http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		res, err := c.Get("http://" + addr + "/health")
		if err != nil {
			return 0, err
		}
		res.Body.Close()
		return res.StatusCode, nil
	}
	waitHealthy := func(what string, within time.Duration) {
		t.Helper()
		deadline := time.Now().Add(within)
		for {
			select {
			case err := <-exited:
				t.Fatalf("%s: evo serve exited (%v); its output:\n%s", what, err, stderr.String())
			default:
			}
			status, err := health()
			if status == http.StatusOK {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: no 200 from /health within %v (last: %d %v); output:\n%s", what, within, status, err, stderr.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitHealthy("start", 60*time.Second)

	var conns []net.Conn
	for range 150 {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			break // the backlog is full: enough
		}
		conns = append(conns, c)
	}
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(stderr.String(), "too many open files") {
		if time.Now().After(deadline) {
			t.Fatalf("opened %d connections, but the server never ran out of descriptors; output:\n%s", len(conns), stderr.String())
		}
		select {
		case err := <-exited:
			t.Fatalf("evo serve exited on running out of descriptors (%v); its output:\n%s", err, stderr.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
	// The connections stay open on our side: the server must shed them itself.
	waitHealthy("after EMFILE", 60*time.Second)
	select {
	case err := <-exited:
		t.Fatalf("evo serve exited (%v); output:\n%s", err, stderr.String())
	default:
	}
}

// TestHelperServeWithFewFiles is the child process of
// TestServeSurvivesRunningOutOfFileDescriptors: `evo serve` with a low
// RLIMIT_NOFILE. Run directly, it does nothing.
func TestHelperServeWithFewFiles(t *testing.T) {
	n, _ := strconv.ParseUint(os.Getenv("EVO_TEST_SERVE_NOFILE"), 10, 64)
	if n == 0 {
		return
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	lim.Cur = n
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if err := Run(ctx, []string{"serve"}, os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "serve:", err)
		os.Exit(1)
	}
}

// TestRetryableAccept: the accept errors the listener waits out, and the ones
// that end Serve.
func TestRetryableAccept(t *testing.T) {
	for _, err := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED,
		&net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}} {
		if !retryableAccept(err) {
			t.Errorf("%v: not retried", err)
		}
	}
	for _, err := range []error{net.ErrClosed, errors.New("boom")} {
		if retryableAccept(err) {
			t.Errorf("%v: retried", err)
		}
	}
}
