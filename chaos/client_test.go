//go:build chaos

package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
)

// sockClient is one socket of a user, held open (and reopened) for the
// whole test. It tracks every todo.* frame by seq and resumes from the last
// one on every reconnect, alternating replicas when one does not answer.
type sockClient struct {
	id   int
	user *chaosUser
	urls []string // the replicas' /ws URLs

	mu         sync.Mutex
	conn       *websocket.Conn
	last       int64       // highest seq received
	got        []sockEvent // every todo event received, in order
	dups       int         // events received again (seq <= last)
	gaps       []string    // events that came out of order: a seq beyond last+1
	resyncs    int
	connects   int // successful handshakes
	replayed   int // events replayed on resumes (the resumed frames' count)
	dropping   bool
	closes     []time.Time    // when an established socket closed without the test dropping it
	why        map[string]int // and why
	dialErrors int
}

type sockEvent struct {
	Seq  int64
	Type string
	ID   string
	At   string // the todo's updated_at, as sent
}

// frame is a server frame as the clients read it.
type frame struct {
	Type     string `json:"type"`
	Seq      int64  `json:"seq"`
	Replayed int    `json:"replayed"`
	UserID   string `json:"user_id"`
	Todo     struct {
		ID        string `json:"id"`
		UserID    string `json:"user_id"`
		UpdatedAt string `json:"updated_at"`
	} `json:"todo"`
}

var dialer = &websocket.Dialer{HandshakeTimeout: 10 * time.Second}

// startSockets starts n sockets until ctx ends (wg counts them), socket i of
// users[i%len(users)] first on replica i%len(reps), and waits up to within
// for every one to connect.
func startSockets(t *testing.T, ctx context.Context, wg *sync.WaitGroup, users []*chaosUser, n int, reps []*replica, within time.Duration) []*sockClient {
	t.Helper()
	var urls []string
	for _, r := range reps {
		urls = append(urls, r.WSURL())
	}
	var clients []*sockClient
	for i := range n {
		c := &sockClient{id: i, user: users[i%len(users)], urls: urls}
		clients = append(clients, c)
		wg.Add(1)
		go c.run(ctx, wg)
	}
	waitFor(t, "every socket connected", within, func() bool {
		for _, c := range clients {
			c.mu.Lock()
			ok := c.connects > 0
			c.mu.Unlock()
			if !ok {
				return false
			}
		}
		return true
	})
	return clients
}

func (c *sockClient) run(ctx context.Context, wg *sync.WaitGroup) {
	defer wg.Done()
	h := http.Header{"Authorization": {"Bearer " + c.user.token}}
	pick := c.id % len(c.urls)
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		c.mu.Lock()
		url := c.urls[pick] + "?since=" + strconv.FormatInt(c.last, 10) // resume at connect
		c.mu.Unlock()
		conn, resp, err := dialer.DialContext(ctx, url, h)
		if resp != nil && resp.Body != nil {
			resp.Body.Close()
		}
		if err != nil {
			c.mu.Lock()
			c.dialErrors++
			c.mu.Unlock()
			pick = (pick + 1) % len(c.urls) // the other replica, like a balancer would
			sleep(ctx, backoff+time.Duration(rand.Int64N(int64(backoff))))
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 50 * time.Millisecond
		c.session(ctx, conn)
		if rand.IntN(2) == 0 {
			pick = (pick + 1) % len(c.urls)
		}
		sleep(ctx, time.Duration(rand.Int64N(int64(100*time.Millisecond))))
	}
}

// session runs one connection (dialed with ?since= the last seq): hello,
// the replay, resumed, then frames until it fails.
func (c *sockClient) session(ctx context.Context, conn *websocket.Conn) {
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(15 * time.Second))
	var hello frame
	if err := conn.ReadJSON(&hello); err != nil || hello.Type != "hello" {
		return
	}
	c.mu.Lock()
	c.conn, c.dropping = conn, false
	c.connects++
	c.mu.Unlock()
	for {
		// Server pings come every 25 s; anything silent for longer is dead.
		conn.SetReadDeadline(time.Now().Add(45 * time.Second))
		_, data, err := conn.ReadMessage()
		if err != nil {
			c.closed(ctx, conn, err)
			return
		}
		var f frame
		if json.Unmarshal(data, &f) != nil {
			continue
		}
		c.mu.Lock()
		switch f.Type {
		case "todo.created", "todo.updated", "todo.deleted":
			switch {
			case f.Seq <= c.last:
				c.dups++
			case f.Seq != c.last+1:
				c.gaps = append(c.gaps, string(data))
				c.last = f.Seq
			default:
				c.last = f.Seq
				c.got = append(c.got, sockEvent{Seq: f.Seq, Type: f.Type, ID: f.Todo.ID, At: f.Todo.UpdatedAt})
			}
			if f.Todo.UserID != c.user.id {
				c.gaps = append(c.gaps, "another user's event: "+string(data))
			}
		case "resumed":
			c.replayed += f.Replayed
		case "resync":
			c.resyncs++
		}
		c.mu.Unlock()
	}
}

// closed records the end of an established socket.
func (c *sockClient) closed(ctx context.Context, conn *websocket.Conn, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == conn {
		if !c.dropping && ctx.Err() == nil {
			c.closes = append(c.closes, time.Now())
			why := "read: " + err.Error()
			var ce *websocket.CloseError
			switch {
			case errors.As(err, &ce):
				why = fmt.Sprintf("close %d %s", ce.Code, ce.Text)
			case strings.Contains(why, "reset by peer"), strings.Contains(why, "EOF"):
				why = "connection lost"
			}
			if c.why == nil {
				c.why = map[string]int{}
			}
			c.why[why]++
		}
		c.conn = nil
	}
}

// drop closes the socket from the client side: abruptly (no close frame)
// or with a close frame.
func (c *sockClient) drop(abrupt bool) bool {
	c.mu.Lock()
	conn := c.conn
	if conn == nil {
		c.mu.Unlock()
		return false
	}
	c.dropping = true
	c.mu.Unlock()
	if !abrupt {
		conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "chaos"), time.Now().Add(time.Second))
	}
	conn.Close()
	return true
}

func (c *sockClient) lastSeq() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
}

// closesBetween counts unexpected closes in [from, to].
func (c *sockClient) closesBetween(from, to time.Time) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, at := range c.closes {
		if !at.Before(from) && !at.After(to) {
			n++
		}
	}
	return n
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// dropper closes random sockets every period, while enabled.
type dropper struct {
	clients []*sockClient
	enabled atomic.Bool
	drops   atomic.Int64
}

// startDropper runs a dropper of clients until ctx ends: perTick sockets
// every period once enabled.
func startDropper(ctx context.Context, clients []*sockClient, period time.Duration, perTick int) *dropper {
	d := &dropper{clients: clients}
	go d.run(ctx, period, perTick)
	return d
}

func (d *dropper) run(ctx context.Context, period time.Duration, perTick int) {
	for ctx.Err() == nil {
		sleep(ctx, period)
		if !d.enabled.Load() {
			continue
		}
		for range perTick {
			if d.clients[rand.IntN(len(d.clients))].drop(rand.IntN(2) == 0) {
				d.drops.Add(1)
			}
		}
	}
}
