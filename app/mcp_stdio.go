package app

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/evotodo/evo/store"
)

// stdioTodos returns the todo service of the mcp command and a func that
// releases what it opened. With REDIS_URL the command publishes its changes
// like a replica, through the same hub and Redis broker (openHub): every
// replica's sockets get them live. Without it nothing is published: a server
// on the same SQLite file follows the event log (follow.go); PostgreSQL
// without Redis has no such path, and sockets get the changes when they
// resume.
func stdioTodos(ctx context.Context, cfg Config, db store.DB, log *slog.Logger) (*store.Todos, func(), error) {
	if cfg.RedisURL == "" {
		if cfg.DatabaseURL != "" {
			log.Warn("REDIS_URL is not set: open sockets get the changes made over stdio only when they resume")
		}
		return store.NewTodos(db, nil), func() {}, nil
	}
	s := &Server{cfg: cfg, log: log, db: db, metrics: newMetrics(cfg)}
	if err := s.openHub(ctx); err != nil {
		return nil, nil, err
	}
	return s.todos, func() {
		if s.broker != nil {
			s.broker.Close()
		}
		if s.redis != nil {
			s.redis.Close()
		}
	}, nil
}

// Draining stdio.
//
// mcp-go's StdioServer cancels every request still running when its input
// ends, and drops the tool calls still queued: a client that writes a call
// and closes stdin (`echo ... | evo mcp`, a host that hangs up after its
// last request) gets "context canceled" or no answer at all, though the call
// may have committed. So the command's stdin and stdout are wrapped: the
// reader notes the id of every request it passes on, the writer crosses off
// the id of every response written, and the reader holds the end of input
// back until no request is unanswered (or drainWait passed, or ctx ended).

// stdioCalls is the set of requests read from stdin and not yet answered.
type stdioCalls struct {
	mu      sync.Mutex
	pending map[string]int // by request id
	idle    chan struct{}  // closed when pending empties, if someone waits
}

func newStdioCalls() *stdioCalls { return &stdioCalls{pending: make(map[string]int)} }

// rpcID returns the key of a JSON-RPC message's id and whether the message
// is a request (it has a method) or a response; ok is false without an id.
func rpcID(line []byte) (key string, request, ok bool) {
	var msg struct {
		ID     any    `json:"id"`
		Method string `json:"method"`
	}
	if json.Unmarshal(line, &msg) != nil || msg.ID == nil {
		return "", false, false
	}
	// 1 and 1.0 are one id; "1" is another.
	return fmt.Sprintf("%T:%v", msg.ID, msg.ID), msg.Method != "", true
}

// read notes a line read from stdin.
func (c *stdioCalls) read(line []byte) {
	if key, request, ok := rpcID(line); ok && request {
		c.mu.Lock()
		c.pending[key]++
		c.mu.Unlock()
	}
}

// written crosses off the request a line written to stdout answers.
func (c *stdioCalls) written(line []byte) {
	key, request, ok := rpcID(line)
	if !ok || request {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pending[key] > 1 {
		c.pending[key]--
		return
	}
	delete(c.pending, key)
	if len(c.pending) == 0 && c.idle != nil {
		close(c.idle)
		c.idle = nil
	}
}

// wait returns when every request read has been answered, after d, or when
// ctx is done, with the number still unanswered.
func (c *stdioCalls) wait(ctx context.Context, d time.Duration) int {
	c.mu.Lock()
	if len(c.pending) == 0 {
		c.mu.Unlock()
		return 0
	}
	if c.idle == nil {
		c.idle = make(chan struct{})
	}
	idle := c.idle
	c.mu.Unlock()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-idle:
	case <-t.C:
	case <-ctx.Done():
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending)
}

// drainingStdin passes stdin on line by line and holds its end back until
// the requests read are answered.
type drainingStdin struct {
	ctx   context.Context
	in    *bufio.Reader
	calls *stdioCalls
	wait  time.Duration
	log   *slog.Logger
	line  []byte // what is left of the current line
	err   error  // how stdin ended
}

func (r *drainingStdin) Read(p []byte) (int, error) {
	if len(r.line) == 0 && r.err == nil {
		line, err := r.in.ReadBytes('\n')
		if len(line) > 0 && line[len(line)-1] != '\n' {
			line = append(line, '\n') // a last message without its newline is still one
		}
		r.calls.read(line)
		r.line, r.err = line, err
	}
	if len(r.line) > 0 {
		n := copy(p, r.line)
		r.line = r.line[n:]
		return n, nil
	}
	if n := r.calls.wait(r.ctx, r.wait); n > 0 && r.ctx.Err() == nil {
		r.log.Warn("stdin closed: requests still unanswered are cancelled", slog.Int("requests", n), slog.Duration("waited", r.wait))
	}
	return 0, r.err
}

// answeringStdout crosses off each request whose response it writes.
type answeringStdout struct {
	out   io.Writer
	calls *stdioCalls
	mu    sync.Mutex
	part  []byte // a line written in pieces, until its newline
}

func (w *answeringStdout) Write(p []byte) (int, error) {
	n, err := w.out.Write(p)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.part = append(w.part, p...)
	for {
		i := bytes.IndexByte(w.part, '\n')
		if i < 0 {
			break
		}
		w.calls.written(w.part[:i])
		w.part = w.part[i+1:]
	}
	if len(w.part) == 0 {
		w.part = nil
	}
	return n, err
}
