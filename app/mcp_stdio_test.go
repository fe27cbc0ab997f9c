package app

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/evotodo/evo/store/storetest"
)

// rawStdio is the mcp command run in-process on pipes the test writes
// JSON-RPC lines to, as a host (or `echo ... | evo mcp`) would.
type rawStdio struct {
	t     *testing.T
	in    *io.PipeWriter
	lines chan []byte // stdout, line by line; closed when the command ended
	done  chan error
}

func startRawStdio(t *testing.T, cfg Config, args ...string) *rawStdio {
	t.Helper()
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	s := &rawStdio{t: t, in: inW, lines: make(chan []byte, 100), done: make(chan error, 1)}
	go func() {
		err := runMCP(context.Background(), cfg, storetest.Quiet(), args, func(string) string { return "" }, inR, outW, io.Discard)
		outW.Close()
		inR.Close()
		s.done <- err
	}()
	go func() {
		defer close(s.lines)
		sc := bufio.NewScanner(outR)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			s.lines <- append([]byte(nil), sc.Bytes()...)
		}
	}()
	t.Cleanup(func() { inW.Close() })
	return s
}

func (s *rawStdio) send(line string) {
	s.t.Helper()
	if _, err := io.WriteString(s.in, line+"\n"); err != nil {
		s.t.Fatalf("write stdin: %v", err)
	}
}

// next returns the next line of stdout, or nil when the command ended.
func (s *rawStdio) next(within time.Duration) []byte {
	s.t.Helper()
	select {
	case line := <-s.lines:
		return line
	case <-time.After(within):
		s.t.Fatalf("no line on stdout within %v", within)
		return nil
	}
}

// rpcResponse is a JSON-RPC response, loosely: isError marks a tool error.
type rpcResponse struct {
	ID     int `json:"id"`
	Result struct {
		IsError bool `json:"isError"`
	} `json:"result"`
	Error *struct{ Message string } `json:"error"`
}

// holdWriteLock takes SQLite's write lock on cfg's database from another
// connection, as another process's long transaction would; release ends it.
func holdWriteLock(t *testing.T, cfg Config) (release func()) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(cfg.DataDir, "evo.db")+"?_pragma=busy_timeout(10000)&_txlock=immediate")
	if err != nil {
		t.Fatal(err)
	}
	tx, err := db.Begin() // BEGIN IMMEDIATE: the write lock, now
	if err != nil {
		db.Close()
		t.Fatal(err)
	}
	return func() {
		tx.Rollback()
		db.Close()
	}
}

// TestMCPStdioAnswersBeforeExit: a client that writes its calls and closes
// stdin right away (`echo ... | evo mcp`) gets every answer, also for calls
// still running when stdin ended; then the command exits cleanly.
func TestMCPStdioAnswersBeforeExit(t *testing.T) {
	cfg := devConfig(t, nil)
	s := startRawStdio(t, cfg, "--email", "ada@example.com")
	s.send(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`)
	if r := decode[rpcResponse](t, s.next(10*time.Second)); r.ID != 1 || r.Error != nil {
		t.Fatalf("initialize: got %+v", r)
	}
	s.send(`{"jsonrpc":"2.0","method":"notifications/initialized"}`)

	// The writes wait for the lock, so they are still running when stdin ends.
	release := holdWriteLock(t, cfg)
	const calls = 4
	for i := range calls {
		s.send(fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"add_task","arguments":{"title":"in flight %d"}}}`, 2+i, i))
	}
	s.send(`{"jsonrpc":"2.0","id":99,"method":"tools/list"}`)
	s.in.Close()
	time.Sleep(500 * time.Millisecond)
	release()

	answered := map[int]bool{}
	for line := s.next(20 * time.Second); line != nil; line = s.next(20 * time.Second) {
		r := decode[rpcResponse](t, line)
		if r.Error != nil || r.Result.IsError {
			t.Errorf("request %d: got %s", r.ID, line)
		}
		answered[r.ID] = true
	}
	for id := 2; id < 2+calls; id++ {
		if !answered[id] {
			t.Errorf("call %d: no answer", id)
		}
	}
	if !answered[99] {
		t.Error("tools/list: no answer")
	}
	if err := <-s.done; err != nil {
		t.Fatalf("mcp command: %v", err)
	}
}
