package app

import (
	"io"
	"sync"
	"time"
)

// logBufferMax bounds the lines waiting for the log writer: a Write beyond it waits
// for the writer (a slow stderr slows requests down rather than growing memory or
// losing lines).
const logBufferMax = 1 << 20

// logFlushDelay is how long a line may wait for the lines after it.
const logFlushDelay = 5 * time.Millisecond

// logWriter takes the log lines of `evo serve` off the request path: Write copies
// a line into a buffer and returns; one goroutine writes the buffer out
// logFlushDelay after its first line, so under load the lines of a few
// milliseconds cost one system call and one wake-up (one write(2) and one
// wake-up per line were most of the request log's cost, bench/README.md). Close
// writes what is left; a Write after Close goes straight to the underlying
// writer. A process killed with SIGKILL loses the last few milliseconds of lines.
type logWriter struct {
	w       io.Writer
	wake    chan struct{}
	closing chan struct{} // closed by Close: write what is buffered now
	done    chan struct{}

	mu     sync.Mutex
	space  *sync.Cond // signalled when the buffer was taken
	buf    []byte
	closed bool
}

func newLogWriter(w io.Writer) *logWriter {
	lw := &logWriter{w: w, wake: make(chan struct{}, 1), closing: make(chan struct{}), done: make(chan struct{})}
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
		t := time.NewTimer(logFlushDelay)
		select {
		case <-t.C:
		case <-lw.closing:
			t.Stop()
		}
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
	close(lw.closing)
	close(lw.wake) // the writer takes what is buffered, then ends
	lw.space.Broadcast()
	lw.mu.Unlock()
	<-lw.done
	return nil
}
