package main

import (
	"bytes"
	"context"

	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	fws "github.com/fasthttp/websocket"
	"golang.org/x/time/rate"
)

// measure is one measurement window: the changes made in it (their REST start times,
// indexed by change number) and what the sockets received. Frames are matched to changes
// by the title, "bench <tag> <j>", which each change sets.
type measure struct {
	tag    string
	prefix []byte // `"title":"bench <tag> `
	starts []atomic.Int64
	lat    hist

	received  atomic.Int64 // todo frames of this window's changes, in seq order
	dups      atomic.Int64 // todo frames with a seq already seen on the socket
	gaps      atomic.Int64 // todo frames whose seq skipped one
	unmatched atomic.Int64 // todo frames of no change of this window
	others    atomic.Int64 // frames that are not todo.*
	last      atomic.Int64 // arrival of the latest matched frame (since())
}

func newMeasure(tag string, maxChanges int) *measure {
	return &measure{
		tag:    tag,
		prefix: []byte(`"title":"bench ` + tag + ` `),
		starts: make([]atomic.Int64, maxChanges),
	}
}

// epoch is the origin of the monotonic timestamps kept in measure.starts.
var epoch = time.Now()

func since() int64 { return int64(time.Since(epoch)) }

// fleet is the load tool's WebSockets: one reader goroutine each.
type fleet struct {
	cur     atomic.Pointer[measure]
	closed  atomic.Int64 // sockets the server closed or that failed after connecting
	readers sync.WaitGroup

	mu        sync.Mutex
	socks     []*sock
	perUser   []int       // live sockets per user index
	perServer []int       // sockets per replica index
	cf        *centrifugo // nil: the sockets are Evo's
	errs      map[string]int
	closeErrs map[string]int
}

type sock struct {
	conn    *fws.Conn
	lastSeq int64
	counted bool // lastSeq is known (Evo: from hello; Centrifugo: the first publication)
}

// newFleet returns an empty fleet of sockets to Evo, or to Centrifugo if cf is not nil.
func newFleet(users, replicas int, cf *centrifugo) *fleet {
	f := &fleet{perUser: make([]int, users), perServer: make([]int, replicas), errs: map[string]int{}, closeErrs: map[string]int{}, cf: cf}
	f.cur.Store(newMeasure("idle", 0))
	return f
}

// connect opens n sockets, socket i for user i%len(users) on replica i%len(wsURLs), at
// most conc handshakes at a time and at most perSec per second (0: no limit). It returns
// when every socket was greeted and resumed (or failed).
func (f *fleet) connect(ctx context.Context, wsURLs []string, users []benchUser, n, conc int, perSec float64) (ok int, took time.Duration) {
	d := &fws.Dialer{
		HandshakeTimeout: 30 * time.Second,
		ReadBufferSize:   2048,
		WriteBufferSize:  256,
		NetDialContext:   (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
	}
	var lim *rate.Limiter
	if perSec > 0 {
		lim = rate.NewLimiter(rate.Limit(perSec), 1)
	}
	sem := make(chan struct{}, conc)
	var wg sync.WaitGroup
	var okCount atomic.Int64
	start := time.Now()
	for i := range n {
		if lim != nil && lim.Wait(ctx) != nil {
			break
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		u, r := i%len(users), i%len(wsURLs)
		wg.Add(1)
		go func() {
			var s *sock
			var err error
			if f.cf != nil {
				s, err = f.cf.dial(ctx, d, wsURLs[r], users[u])
			} else {
				s, err = dialAndGreet(ctx, d, wsURLs[r], users[u].Token)
			}
			<-sem
			// Counted before wg.Done: connect's caller reads the counts once wg is done.
			f.mu.Lock()
			if err != nil {
				f.errs[err.Error()]++
			} else {
				okCount.Add(1)
				f.socks = append(f.socks, s)
				f.perUser[u]++
				f.perServer[r]++
				f.readers.Add(1)
			}
			f.mu.Unlock()
			wg.Done()
			if err == nil {
				f.read(s)
			}
		}()
	}
	wg.Wait()
	return int(okCount.Load()), time.Since(start)
}

// dialAndGreet opens a socket, reads hello and resumes from its seq: the socket is live
// when this returns.
func dialAndGreet(ctx context.Context, d *fws.Dialer, url, token string) (*sock, error) {
	h := http.Header{"Authorization": {"Bearer " + token}}
	conn, resp, err := d.DialContext(ctx, url, h)
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("dial: HTTP %s", resp.Status)
		}
		return nil, fmt.Errorf("dial: %w", errors.Unwrap(err))
	}
	fail := func(err error) (*sock, error) {
		conn.Close()
		var ce *fws.CloseError
		if errors.As(err, &ce) {
			return nil, fmt.Errorf("greet: closed %d %s", ce.Code, ce.Text)
		}
		return nil, fmt.Errorf("greet: %w", err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	var hello struct {
		Type string `json:"type"`
		Seq  int64  `json:"seq"`
	}
	if err := conn.ReadJSON(&hello); err != nil {
		return fail(err)
	}
	if hello.Type != "hello" {
		return fail(fmt.Errorf("first frame is %q, not hello", hello.Type))
	}
	if err := conn.WriteMessage(fws.TextMessage, []byte(`{"type":"resume","since":`+strconv.FormatInt(hello.Seq, 10)+`}`)); err != nil {
		return fail(err)
	}
	s := &sock{conn: conn, lastSeq: hello.Seq, counted: true}
	for {
		_, data, err := conn.ReadMessage()
		if err != nil {
			return fail(err)
		}
		if bytes.HasPrefix(data, []byte(`{"type":"resumed"`)) {
			break
		}
		if seq, ok := frameSeq(data); ok { // an event committed while greeting
			s.lastSeq = seq
		}
	}
	_ = conn.SetReadDeadline(time.Time{})
	return s, nil
}

var (
	todoPrefix = []byte(`{"type":"todo.`)
	seqKey     = []byte(`"seq":`)
)

// frameSeq returns the seq of a todo.* frame ({"type":"todo.x","seq":N,...}).
func frameSeq(b []byte) (int64, bool) {
	if !bytes.HasPrefix(b, todoPrefix) {
		return 0, false
	}
	i := bytes.Index(b, seqKey)
	if i < 0 {
		return 0, false
	}
	n, ok := leadingInt(b[i+len(seqKey):])
	return n, ok
}

func leadingInt(b []byte) (int64, bool) {
	var n int64
	i := 0
	for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
		n = n*10 + int64(b[i]-'0')
	}
	return n, i > 0
}

// read is a socket's reader goroutine: it reads into one reused buffer and accounts
// every frame to the current measure.
func (f *fleet) read(s *sock) {
	defer f.readers.Done()
	buf := make([]byte, 0, 1024)
	for {
		_, r, err := s.conn.NextReader()
		if err != nil {
			f.closed.Add(1)
			var ce *fws.CloseError
			key := "read: " + err.Error()
			if errors.As(err, &ce) {
				key = fmt.Sprintf("closed %d %s", ce.Code, ce.Text)
			}
			if !errors.Is(err, net.ErrClosed) {
				f.mu.Lock()
				f.closeErrs[key]++
				f.mu.Unlock()
			}
			return
		}
		buf = buf[:0]
		for {
			if len(buf) == cap(buf) {
				buf = append(buf, 0)[:len(buf)]
			}
			n, err := r.Read(buf[len(buf):cap(buf)])
			buf = buf[:len(buf)+n]
			if err == io.EOF {
				break
			}
			if err != nil {
				break // the next NextReader reports it
			}
		}
		now := since()
		m := f.cur.Load()
		if f.cf != nil {
			f.cf.each(s, buf, func(msg []byte, seq int64, ok bool) { account(s, m, msg, seq, ok, now) })
			continue
		}
		seq, ok := frameSeq(buf)
		account(s, m, buf, seq, ok, now)
	}
}

// account counts a message that arrived at now on s: a change's delivery (ok) with its
// seq (0: the server does not number them), or something else.
func account(s *sock, m *measure, msg []byte, seq int64, ok bool, now int64) {
	if !ok {
		m.others.Add(1)
		return
	}
	if seq > 0 {
		switch {
		case !s.counted:
		case seq <= s.lastSeq:
			m.dups.Add(1)
			return
		case seq > s.lastSeq+1:
			m.gaps.Add(1)
		}
		s.lastSeq, s.counted = seq, true
	}
	i := bytes.Index(msg, m.prefix)
	if i < 0 {
		m.unmatched.Add(1)
		return
	}
	j, ok := leadingInt(msg[i+len(m.prefix):])
	if !ok || j >= int64(len(m.starts)) {
		m.unmatched.Add(1)
		return
	}
	st := m.starts[j].Load()
	if st == 0 {
		m.unmatched.Add(1)
		return
	}
	m.lat.Record(time.Duration(now - st))
	m.received.Add(1)
	for {
		l := m.last.Load()
		if now <= l || m.last.CompareAndSwap(l, now) {
			break
		}
	}
}

// close closes every socket (close frame, then the TCP connection) and waits for the
// readers, at most 10s.
func (f *fleet) close() {
	f.mu.Lock()
	socks := f.socks
	f.socks = nil
	f.mu.Unlock()
	msg := fws.FormatCloseMessage(fws.CloseNormalClosure, "bench done")
	for _, s := range socks {
		_ = s.conn.WriteControl(fws.CloseMessage, msg, time.Now().Add(time.Second))
		_ = s.conn.Close()
	}
	done := make(chan struct{})
	go func() { f.readers.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
	}
}

// errors returns the connect and close errors seen, most frequent first.
func (f *fleet) errorSummary() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var b bytes.Buffer
	for _, m := range []map[string]int{f.errs, f.closeErrs} {
		for k, v := range m {
			fmt.Fprintf(&b, "%d× %s; ", v, k)
		}
	}
	return b.String()
}
