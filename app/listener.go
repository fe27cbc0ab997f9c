package app

import (
	"errors"
	"log/slog"
	"net"
	"syscall"
	"time"

	"golang.org/x/time/rate"
)

// guardedListener is the listener the server accepts on. It bounds the wait for
// a new connection's first request, and survives running out of file descriptors.
//
// Every accepted connection gets a read deadline of firstRead: with
// ReduceMemoryUsage, fasthttp reads a new connection's first byte with no deadline
// (ReadTimeout starts after it), so a client that connects and sends nothing would
// hold its descriptor forever. fasthttp sets its own deadlines once the first byte
// is in, and clears them when a WebSocket hijacks the connection.
//
// An accept that fails for want of descriptors or memory (EMFILE, ENFILE, ENOBUFS,
// ENOMEM) is retried with a backoff of 5 ms doubling to 1 s, as net/http's Serve
// does, and logged at most every 10 s; fasthttp would treat it as fatal and end
// Serve.
type guardedListener struct {
	net.Listener
	firstRead time.Duration
	log       *slog.Logger
	logEvery  rate.Sometimes
}

func newGuardedListener(ln net.Listener, firstRead time.Duration, log *slog.Logger) *guardedListener {
	return &guardedListener{Listener: ln, firstRead: firstRead, log: log, logEvery: rate.Sometimes{Interval: 10 * time.Second}}
}

func (l *guardedListener) Accept() (net.Conn, error) {
	var delay time.Duration
	for {
		c, err := l.Listener.Accept()
		if err == nil {
			if err := c.SetReadDeadline(time.Now().Add(l.firstRead)); err != nil {
				c.Close()
				continue
			}
			return c, nil
		}
		if !retryableAccept(err) {
			return nil, err
		}
		delay = min(max(2*delay, 5*time.Millisecond), time.Second)
		l.logEvery.Do(func() {
			l.log.Error("accept failed: refusing new connections until it succeeds (raise the open-files limit, ulimit -n, or lower WS_MAX_CONNS)",
				slog.Any("error", err), slog.Duration("retry_in", delay))
		})
		time.Sleep(delay)
	}
}

// retryableAccept reports an accept error that passes: out of descriptors or
// memory, or one the network calls a timeout.
func retryableAccept(err error) bool {
	var ne net.Error
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM) ||
		errors.Is(err, syscall.ECONNABORTED) || (errors.As(err, &ne) && ne.Timeout())
}
