package realtime

import (
	"encoding/binary"
	"errors"
	"sync"
	"time"

	fws "github.com/fasthttp/websocket"
)

// memConn is an in-memory Conn for driving Hub.Serve without a network:
// ReadMessage returns the queued frames one by one, then closes idle
// (everything before was handled) and blocks until the connection dies: its
// read deadline passes, or the hub writes a close frame (the peer answers it at
// once). Every message written goes to onWrite; the close frame's code is kept.
type memConn struct {
	onWrite func([]byte)

	mu        sync.Mutex
	in        []memFrame
	closeCode int
	timer     *time.Timer
	idle      chan struct{}
	idleOnce  sync.Once
	dead      chan struct{}
	deadOnce  sync.Once
}

type memFrame struct {
	typ  int
	data []byte
}

func newMemConn(frames []memFrame, onWrite func([]byte)) *memConn {
	return &memConn{in: frames, onWrite: onWrite, idle: make(chan struct{}), dead: make(chan struct{})}
}

var errMemConnClosed = errors.New("mem conn closed")

func (c *memConn) kill() { c.deadOnce.Do(func() { close(c.dead) }) }

// closedWith returns the code of the close frame the hub wrote (0: none).
func (c *memConn) closedWith() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closeCode
}

func (c *memConn) ReadMessage() (int, []byte, error) {
	c.mu.Lock()
	if len(c.in) > 0 {
		f := c.in[0]
		c.in = c.in[1:]
		c.mu.Unlock()
		select {
		case <-c.dead:
			return 0, nil, errMemConnClosed
		default:
		}
		return f.typ, f.data, nil
	}
	c.mu.Unlock()
	c.idleOnce.Do(func() { close(c.idle) })
	<-c.dead
	return 0, nil, errMemConnClosed
}

func (c *memConn) WriteMessage(_ int, data []byte) error {
	select {
	case <-c.dead:
		return errMemConnClosed
	default:
	}
	c.onWrite(data)
	return nil
}

func (c *memConn) WriteControl(typ int, data []byte, _ time.Time) error {
	if typ == fws.CloseMessage {
		c.mu.Lock()
		if len(data) >= 2 {
			c.closeCode = int(binary.BigEndian.Uint16(data))
		}
		c.mu.Unlock()
		c.kill()
	}
	return nil
}

func (c *memConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.timer != nil {
		c.timer.Stop()
	}
	c.timer = time.AfterFunc(time.Until(t), c.kill)
	return nil
}

func (c *memConn) SetWriteDeadline(time.Time) error          { return nil }
func (c *memConn) SetReadLimit(int64)                        {}
func (c *memConn) SetPongHandler(func(appData string) error) {}
func (c *memConn) Close() error                              { c.kill(); return nil }
