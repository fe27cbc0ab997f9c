package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	fws "github.com/fasthttp/websocket"
	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwt"
	"github.com/valyala/fasthttp"
)

// centrifugo is the other server the tool can measure (-target centrifugo), for the
// comparison the issue asks for: the same shapes, sockets, rates and measurements, with
// Centrifugo's equivalents of Evo's parts. A user's socket connects with a JWT (HS256,
// -centrifugo-secret) whose "channels" claim subscribes it server-side to the user's
// channel; a change is a publication to that channel through the HTTP API
// (POST /api/publish, -centrifugo-api-key) with the same title Evo's changes set; with
// history on (bench/centrifugo.sh does that), publications carry an offset, the
// equivalent of Evo's seq. Centrifugo's JSON protocol may put several messages in one
// frame, one per line, and pings the client with {} (answered with {}).
type centrifugo struct {
	secret []byte
	apiKey string
}

// users returns n users (ids prefix-<i>, also their channel) with tokens valid for ttl.
func (cf *centrifugo) users(prefix string, n int, ttl time.Duration) ([]benchUser, error) {
	out := make([]benchUser, n)
	for i := range out {
		id := fmt.Sprintf("%s-%05d", prefix, i)
		tok, err := jwt.NewBuilder().Subject(id).Expiration(time.Now().Add(ttl)).
			Claim("channels", []string{id}).Build()
		if err != nil {
			return nil, err
		}
		signed, err := jwt.Sign(tok, jwt.WithKey(jwa.HS256, cf.secret))
		if err != nil {
			return nil, err
		}
		out[i] = benchUser{ID: id, Token: string(signed)}
	}
	return out, nil
}

func (cf *centrifugo) wsURL(hostport string) string {
	return "ws://" + hostport + "/connection/websocket"
}

// dial opens a socket and connects it: the socket is subscribed to its user's channel
// when this returns.
func (cf *centrifugo) dial(ctx context.Context, d *fws.Dialer, url string, u benchUser) (*sock, error) {
	conn, resp, err := d.DialContext(ctx, url, nil)
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		return nil, fmt.Errorf("dial: %w", errors.Unwrap(err))
	}
	cmd, _ := json.Marshal(map[string]any{"id": 1, "connect": map[string]string{"token": u.Token}})
	if err := conn.WriteMessage(fws.TextMessage, cmd); err != nil {
		conn.Close()
		return nil, fmt.Errorf("connect: %w", err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	defer conn.SetReadDeadline(time.Time{})
	for {
		_, data, err := conn.ReadMessage()
		if err != nil {
			conn.Close()
			return nil, fmt.Errorf("connect: %w", err)
		}
		for line := range bytes.Lines(data) {
			var reply struct {
				ID    int             `json:"id"`
				Error json.RawMessage `json:"error"`
			}
			if json.Unmarshal(line, &reply) != nil || reply.ID != 1 {
				continue
			}
			if reply.Error != nil {
				conn.Close()
				return nil, fmt.Errorf("connect: %s", reply.Error)
			}
			return &sock{conn: conn}, nil
		}
	}
}

var (
	pushPrefix = []byte(`{"push":`)
	pubKey     = []byte(`"pub":`)
	offsetKey  = []byte(`"offset":`)
)

// each calls fn for every message of frame: a publication (its offset as seq, 0 without
// history) or anything else (ok false). It answers the server's pings.
func (cf *centrifugo) each(s *sock, frame []byte, fn func(msg []byte, seq int64, ok bool)) {
	for msg := range bytes.Lines(frame) {
		msg = bytes.TrimRight(msg, "\n")
		switch {
		case string(msg) == "{}":
			_ = s.conn.WriteMessage(fws.TextMessage, msg)
		case bytes.HasPrefix(msg, pushPrefix) && bytes.Contains(msg, pubKey):
			var seq int64
			if i := bytes.LastIndex(msg, offsetKey); i >= 0 {
				seq, _ = leadingInt(msg[i+len(offsetKey):])
			}
			fn(msg, seq, true)
		default:
			fn(msg, 0, false)
		}
	}
}

// publish fills req with the publication of title to u's channel on host.
func (cf *centrifugo) publish(req *fasthttp.Request, host string, u benchUser, title string) {
	req.SetRequestURI(host + "/api/publish")
	req.Header.SetMethod(fasthttp.MethodPost)
	req.Header.Set("X-API-Key", cf.apiKey)
	req.Header.SetContentType("application/json")
	req.SetBody(fmt.Appendf(nil, `{"channel":%q,"data":{"title":%q}}`, u.ID, title))
}

// publishError reads the answer of the HTTP API: 200 with {"result":...}, or an error.
func publishError(resp *fasthttp.Response) error {
	if sc := resp.StatusCode(); sc != http.StatusOK {
		return fmt.Errorf("POST /api/publish: %s %s", status(sc), bytes.TrimSpace(resp.Body()))
	}
	if bytes.Contains(resp.Body(), []byte(`"error"`)) {
		return fmt.Errorf("POST /api/publish: %s", bytes.TrimSpace(resp.Body()))
	}
	return nil
}
