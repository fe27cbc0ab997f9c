package realtime

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	fws "github.com/fasthttp/websocket"
)

// FuzzParseFrame feeds arbitrary bytes to parseFrame and parseSince, the
// parsers of the socket read loop (Client.handleFrame). Properties: no panic;
// an accepted frame is a JSON text frame whose object has a non-empty type; a
// since is accepted exactly when it is a non-negative JSON integer literal
// (strconv is the oracle), so a null, a fraction or an exponent never resumes.
func FuzzParseFrame(f *testing.F) {
	for _, s := range []string{
		`{"type":"ping"}`, `{"type":"resume","since":0}`, `{"type":"resume","since":12}`,
		`{"type":"resume","since":-1}`, `{"type":"resume","since":null}`, `{"type":"resume","since":1e3}`,
		`{"type":"resume","since":"5"}`, `{"type":"resume","since":9223372036854775808}`,
		`{"type":"chat","message":"add milk","id":"c1"}`, `{"type":""}`, `{"TYPE":"ping"}`, `null`, `[]`, `"ping"`,
		`{"type":"resume","since":1,"since":2}`, "{\"type\":\"\xff\"}", ``, `{`,
	} {
		f.Add(uint8(fws.TextMessage), []byte(s))
	}
	f.Add(uint8(fws.BinaryMessage), []byte(`{"type":"ping"}`))
	f.Fuzz(func(t *testing.T, msgType uint8, data []byte) {
		fr, bad := parseFrame(int(msgType), data)
		if bad != "" {
			if fr.Type != "" || fr.Since != nil {
				t.Fatalf("refused frame %q carries %+v", data, fr)
			}
			return
		}
		if int(msgType) != fws.TextMessage {
			t.Fatalf("accepted a frame of message type %d", msgType)
		}
		if fr.Type == "" || !json.Valid(data) || !bytes.HasPrefix(bytes.TrimLeft(data, " \t\r\n"), []byte("{")) {
			t.Fatalf("accepted %q as %+v: not a JSON object with a type", data, fr)
		}
		if fr.Since == nil {
			if _, ok := parseSince(fr.Since); ok {
				t.Fatalf("a missing since was accepted")
			}
			return
		}
		since, ok := parseSince(fr.Since)
		want, err := strconv.ParseInt(string(fr.Since), 10, 64)
		wantOK := err == nil && want >= 0 && !strings.HasPrefix(string(fr.Since), "+")
		if ok != wantOK || (ok && since != want) {
			t.Fatalf("since %q: got %d, %v; want %d, %v", fr.Since, since, ok, want, wantOK)
		}
	})
}

// fuzzHistory is a fixed event log of one user: seqs 1..n.
type fuzzHistory struct {
	user string
	n    int64
}

func fuzzEvent(seq int64) Publication {
	return Publication{Seq: seq, Data: fmt.Appendf(nil, `{"type":"todo.created","seq":%d}`, seq)}
}

func (h fuzzHistory) Since(ctx context.Context, user string, since int64, limit int) ([]Publication, error) {
	var out []Publication
	for s := max(since, 0) + 1; user == h.user && s <= h.n && len(out) < limit; s++ {
		out = append(out, fuzzEvent(s))
	}
	return out, nil
}

func (h fuzzHistory) LastSeq(ctx context.Context, user string) (int64, error) {
	if user != h.user {
		return 0, nil
	}
	return h.n, nil
}

// fuzzSent keeps what the hub wrote to a fuzzed socket.
type fuzzSent struct {
	mu     sync.Mutex
	frames [][]byte
}

func (s *fuzzSent) add(data []byte) {
	s.mu.Lock()
	s.frames = append(s.frames, bytes.Clone(data))
	s.mu.Unlock()
}

func (s *fuzzSent) get() [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.frames)
}

// fuzzEcho is a FrameHandler that answers every application frame with a
// JSON frame naming its type (what app.Server does is fuzzed in package app).
type fuzzEcho struct{}

func (fuzzEcho) HandleFrame(c *Client, typ string, raw []byte) {
	data, _ := json.Marshal(map[string]string{"type": "echo", "of": typ})
	c.Send(data)
}

var fuzzUsers atomic.Int64

// FuzzClientFrames drives a real Client through Hub.Serve with a fake
// connection: the frames of the input (split at newlines, a bit of mask
// making frame i binary; a first line "?since=N" resumes at connect) go through the very read loop of a socket whose
// user has events 1..n in the log. Properties: no panic, no deadlock (Serve
// returns once the connection dies); hello first, with seq n; every frame
// sent is a JSON object with a type; no todo event is sent twice (a resync
// restarts the count), each resume's events go out in seq order; resumed
// names the log's last seq, how many events were sent since the previous
// answer, and comes only when every event after its since was sent; the only
// close the server sends is 3500 (a bad resume).
func FuzzClientFrames(f *testing.F) {
	for _, s := range []string{
		`{"type":"resume","since":0}`,
		`{"type":"resume","since":2}` + "\n" + `{"type":"ping"}`,
		`{"type":"resume","since":99}`,
		`{"type":"resume","since":-1}`,
		`{"type":"resume","since":null}`,
		`{"type":"ping"}` + "\n" + `{"type":"resume","since":1}` + "\n" + `{"type":"resume","since":1}`,
		`{"type":"chat","message":"hi"}` + "\n" + `{"type":"resume","since":0}`,
		`{"type":"echo"}` + "\n" + `{"type":"resume","since":7}`,
		`{"type":"resume","since":3}` + "\n" + `{"type":"resume","since":5}`,
		"not json\n{}\n[]\n{\"type\":\"\"}\n{\"type\":\"resume\"}",
		"?since=3\n" + `{"type":"resume","since":1}`,
		"?since=40\n" + `{"type":"ping"}`,
		"?since=0\n" + `{"type":"resume","since":5}` + "\n" + `{"type":"resume","since":2}`,
	} {
		f.Add(uint8(5), uint16(0), []byte(s))
	}
	f.Add(uint8(3), uint16(1), []byte(`{"type":"resume","since":0}`+"\n"+`{"type":"resume","since":0}`))
	hub := NewHub(NewMemoryBroker(), nil, Config{LogCheck: time.Hour, RateBurst: 64}, nil)
	f.Fuzz(func(t *testing.T, events uint8, binary uint16, input []byte) {
		n := int64(events % 12)
		user := "fuzz" + strconv.FormatInt(fuzzUsers.Add(1), 10)
		hub.history = fuzzHistory{user: user, n: n} // one iteration at a time
		var frames []memFrame
		for i, data := range bytes.Split(input, []byte("\n")) {
			if i == 24 {
				break
			}
			typ := fws.TextMessage
			if binary&(1<<i) != 0 {
				typ = fws.BinaryMessage
			}
			frames = append(frames, memFrame{typ, data})
		}
		sess := Session{User: user}
		if len(frames) > 0 { // a first line "?since=N" is a connect-time resume
			if v, ok := bytes.CutPrefix(frames[0].data, []byte("?since=")); ok {
				if since, err := strconv.ParseInt(string(v), 10, 64); err == nil && since >= 0 {
					sess.Since = &since
					frames = frames[1:]
				}
			}
		}
		sent := &fuzzSent{}
		conn := newMemConn(frames, sent.add)
		served := make(chan struct{})
		go func() {
			defer close(served)
			hub.Serve(context.Background(), conn, sess, fuzzEcho{})
		}()
		select {
		case <-conn.idle:
		case <-conn.dead:
		case <-time.After(10 * time.Second):
			t.Fatal("the read loop did not take every frame within 10s")
		}
		// Let the catch-up started by a resume finish (it is asynchronous).
		deadline := time.Now().Add(5 * time.Second)
		for !fuzzSettled(conn, sent.get(), n) && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		conn.kill()
		select {
		case <-served:
		case <-time.After(10 * time.Second):
			t.Fatal("Serve did not return within 10s of the connection dying")
		}
		checkFuzzWrites(t, conn.closedWith(), sent.get(), n, frames)
	})
}

// fuzzSettled: the socket closed, or its last frame sent (of writes) is not a
// todo event short of n (a replay still running).
func fuzzSettled(c *memConn, writes [][]byte, n int64) bool {
	select {
	case <-c.dead:
		return true
	default:
	}
	if len(writes) == 0 {
		return false
	}
	var last struct {
		Type string `json:"type"`
		Seq  int64  `json:"seq"`
	}
	_ = json.Unmarshal(writes[len(writes)-1], &last)
	return last.Type != "todo.created" || last.Seq >= n
}

// checkFuzzWrites checks the frames the hub wrote (writes) and the close code it sent
// (0: none) against the properties of FuzzClientFrames.
func checkFuzzWrites(t *testing.T, closeCode int, writes [][]byte, n int64, in []memFrame) {
	t.Helper()
	if closeCode != 0 && closeCode != CloseBadRequest {
		t.Fatalf("closed with %d, want no close or %d", closeCode, CloseBadRequest)
	}
	if len(writes) == 0 && closeCode == 0 {
		t.Fatal("nothing was sent, not even hello") // a close may overtake the queue
	}
	// sent: the todo events sent since hello or the last resync; replayed: since the last
	// answer (resumed, resync). A resume sends the events after since the socket has not
	// sent, as runs of consecutive seqs.
	sent, prev, replayed := map[int64]bool{}, int64(-1), 0
	for i, data := range writes {
		var fr struct {
			Type     string `json:"type"`
			Seq      *int64 `json:"seq"`
			Since    int64  `json:"since"`
			Replayed int    `json:"replayed"`
		}
		if err := json.Unmarshal(data, &fr); err != nil || fr.Type == "" {
			t.Fatalf("frame %d %q is not a JSON object with a type", i, data)
		}
		if i == 0 {
			if fr.Type != "hello" || fr.Seq == nil || *fr.Seq != n {
				t.Fatalf("first frame %s, want hello with seq %d", data, n)
			}
			continue
		}
		switch fr.Type {
		case "hello":
			t.Fatalf("frame %d: a second hello %s", i, data)
		case "todo.created":
			s := *fr.Seq
			switch {
			case s < 1 || s > n:
				t.Fatalf("frame %d: seq %d, the log is 1..%d; frames: %q", i, s, n, writes)
			case sent[s]:
				t.Fatalf("frame %d: seq %d sent twice; frames: %q", i, s, writes)
			case prev >= 0 && s != prev+1 && sent[s-1]:
				t.Fatalf("frame %d: seq %d after %d, not in order; frames: %q", i, s, prev, writes)
			}
			sent[s], prev = true, s
			replayed++
		case "resync":
			if *fr.Seq != n {
				t.Fatalf("frame %d: resync to %d, the log ends at %d", i, *fr.Seq, n)
			}
			sent, prev, replayed = map[int64]bool{}, -1, 0
		case "resumed":
			if *fr.Seq != n {
				t.Fatalf("frame %d: resumed at seq %d, the log ends at %d; frames: %q", i, *fr.Seq, n, writes)
			}
			if fr.Replayed != replayed {
				t.Fatalf("frame %d: resumed says %d replayed, %d were sent; frames: %q", i, fr.Replayed, replayed, writes)
			}
			if fr.Since < 0 || fr.Since > *fr.Seq {
				t.Fatalf("frame %d: resumed since %d beyond seq %d", i, fr.Since, *fr.Seq)
			}
			for s := fr.Since + 1; s <= *fr.Seq; s++ {
				if !sent[s] {
					t.Fatalf("frame %d: resumed since %d, but seq %d was never sent; frames: %q", i, fr.Since, s, writes)
				}
			}
			prev, replayed = -1, 0
		case "pong", "echo", "error":
		default:
			t.Fatalf("frame %d: unexpected %s", i, data)
		}
	}
	_ = in
}
