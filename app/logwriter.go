package app

import (
	"io"
	"sync"
)

// logBufferMax bounds the lines waiting for the log writer: a Write beyond it waits
// for the writer (a slow stderr slows requests down rather than growing memory or
// losing lines).
const logBufferMax = 1 << 20

// logWriter takes the log lines of `evo serve` off the request path: Write copies
// a line into a buffer and returns, one goroutine writes the buffer out. Lines
// written while a write(2) runs go out together in the next one, so under load
// many lines cost one system call (the request log's write was half its cost,
// bench/README.md), and an idle server writes each line at once. Close writes
// what is left; a Write after Close goes straight to the underlying writer.
type logWriter struct {
	w    io.Writer
	wake chan struct{}
	done chan struct{}

	mu     sync.Mutex
	space  *sync.Cond // signalled when the buffer was taken
	buf    []byte
	closed bool
}

func newLogWriter(w io.Writer) *logWriter {
	lw := &logWriter{w: w, wake: make(chan struct{}, 1), done: make(chan struct{})}
	lw.space = sync.NewCond(&lw.mu)
	go lw.run()
	return lw
}

func (lw *logWriter) Write(p []byte) (int, error) {
	lw.mu.Lock()
	for len(lw.buf) >= logBufferMax && !lw.closed {
		lw.space.Wait()
	}
	defer lw.mu.Unlock()
	if lw.closed {
		lw.mu.Unlock()
		<-lw.done // after the buffered lines
		lw.mu.Lock()
		return lw.w.Write(p)
	}
	lw.buf = append(lw.buf, p...)
	select {
	case lw.wake <- struct{}{}:
	default: // the writer is already due to run
	}
	return len(p), nil
}

func (lw *logWriter) run() {
	defer close(lw.done)
	var out []byte
	for range lw.wake {
		lw.mu.Lock()
		out, lw.buf = lw.buf, out[:0]
		lw.space.Broadcast()
		lw.mu.Unlock()
		if len(out) > 0 {
			lw.w.Write(out) // nowhere to report a failing stderr
		}
	}
}

// Close writes out the buffered lines and returns when they are written.
func (lw *logWriter) Close() error {
	lw.mu.Lock()
	if lw.closed {
		lw.mu.Unlock()
		return nil
	}
	lw.closed = true
	close(lw.wake) // the writer takes what is buffered, then ends
	lw.space.Broadcast()
	lw.mu.Unlock()
	<-lw.done
	return nil
}
