package app

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// slowWriter is a stderr whose write(2) takes a while (a pipe to a busy log
// collector): it records every Write it gets.
type slowWriter struct {
	mu     sync.Mutex
	writes int
	buf    bytes.Buffer
}

func (w *slowWriter) Write(p []byte) (int, error) {
	time.Sleep(2 * time.Millisecond)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes++
	return w.buf.Write(p)
}

// Every line of 8 concurrent loggers reaches stderr whole and in each logger's
// order, many lines per write while stderr is slow, and Close returns only when
// all are written.
func TestLogWriterKeepsEveryLine(t *testing.T) {
	sw := &slowWriter{}
	lw := newLogWriter(sw)
	const loggers, lines = 8, 200
	var wg sync.WaitGroup
	for g := range loggers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range lines {
				fmt.Fprintf(lw, "logger=%d line=%d\n", g, i)
			}
		}()
	}
	wg.Wait()
	if err := lw.Close(); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(lw, "after close\n")

	got := strings.Split(strings.TrimSuffix(sw.buf.String(), "\n"), "\n")
	if len(got) != loggers*lines+1 || got[len(got)-1] != "after close" {
		t.Fatalf("got %d lines (want %d), last %q", len(got), loggers*lines+1, got[len(got)-1])
	}
	next := make([]int, loggers)
	for _, l := range got[:len(got)-1] {
		var g, i int
		if _, err := fmt.Sscanf(l, "logger=%d line=%d", &g, &i); err != nil || g < 0 || g >= loggers {
			t.Fatalf("line %q is not a whole line written (%v)", l, err)
		}
		if i != next[g] {
			t.Fatalf("logger %d: line %d came where %d was due", g, i, next[g])
		}
		next[g]++
	}
	// 1,600 lines at 2 ms a write one by one would take 3.2 s: they coalesce.
	// (So they do with a fast stderr: see TestLogWriterWritesAtOnce.)
	if sw.writes > loggers*lines/4 {
		t.Errorf("%d writes for %d lines: lines written while stderr was busy did not go out together", sw.writes, loggers*lines)
	}
}

// An idle server's line is written within logFlushDelay, not when some buffer fills.
func TestLogWriterWritesAtOnce(t *testing.T) {
	var out syncBuffer
	lw := newLogWriter(&out)
	defer lw.Close()
	fmt.Fprintln(lw, "msg=serving")
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(out.String(), "msg=serving") {
		if time.Now().After(deadline) {
			t.Fatal("the line was not written within 5 s")
		}
		time.Sleep(time.Millisecond)
	}
	// Lines that come faster than the flush delay go out together, even to a fast stderr.
	cw := &countingWriter{}
	lw2 := newLogWriter(cw)
	for i := range 1000 {
		fmt.Fprintf(lw2, "line=%d\n", i)
	}
	lw2.Close()
	if cw.writes > 10 {
		t.Errorf("%d writes for 1,000 lines made at once", cw.writes)
	}
}

// countingWriter counts its writes.
type countingWriter struct {
	mu     sync.Mutex
	writes int
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes++
	return len(p), nil
}
