package app

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/url"
	"time"

	"github.com/gofiber/contrib/websocket"
	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/utils"

	"github.com/evotodo/evo/realtime"
	"github.com/evotodo/evo/store"
)

// events adapts the store's event log and the hub to each other: it is the
// store's Publisher (committed events go to the hub) and the hub's History
// (resume and catch-up read the log). A frame is the event's JSON, encoded
// once: {"type":"todo.created","seq":7,"todo":{...},"at":"..."}.
type events struct {
	db  store.DB
	hub *realtime.Hub
	log *slog.Logger
}

var (
	_ store.Publisher         = (*events)(nil)
	_ realtime.History        = (*events)(nil)
	_ realtime.LastSeqsReader = (*events)(nil)
)

// PublishEvent sends a committed event to every socket of the user. A
// failed publish loses nothing: sockets catch up from the log.
func (e *events) PublishEvent(ctx context.Context, userID string, ev store.Event) {
	data, err := json.Marshal(ev)
	if err != nil {
		e.log.Error("encode event", slog.Any("error", err))
		return
	}
	if err := e.hub.Publish(ctx, userID, realtime.Publication{Seq: ev.Seq, Data: data}); err != nil {
		e.log.Warn("publish event", slog.String("user_id", userID), slog.Int64("seq", ev.Seq), slog.Any("error", err))
	}
}

// Since returns the user's events after since as frames.
func (e *events) Since(ctx context.Context, user string, since int64, limit int) ([]realtime.Publication, error) {
	evs, err := e.db.EventsSince(ctx, user, since, limit)
	if err != nil {
		return nil, err
	}
	pubs := make([]realtime.Publication, len(evs))
	for i, ev := range evs {
		data, err := json.Marshal(ev)
		if err != nil {
			return nil, err
		}
		pubs[i] = realtime.Publication{Seq: ev.Seq, Data: data}
	}
	return pubs, nil
}

// LastSeq returns the user's latest seq.
func (e *events) LastSeq(ctx context.Context, user string) (int64, error) {
	return e.db.LastSeq(ctx, user)
}

// LastSeqs returns the latest seq of each of users (the hub's log check).
func (e *events) LastSeqs(ctx context.Context, users []string) (map[string]int64, error) {
	return e.db.LastSeqs(ctx, users)
}

// wsAuthenticate runs before the upgrade: the Origin (when sent) must be one
// of CORS_ORIGINS or the server's own, and the token (Authorization header, or ?token= for
// browsers) must be valid. Failures are plain HTTP answers: 403, 401, 503.
func (s *Server) wsAuthenticate(c *fiber.Ctx) error {
	if !websocket.IsWebSocketUpgrade(c) {
		return fiber.NewError(fiber.StatusUpgradeRequired, "GET /ws must be a WebSocket upgrade")
	}
	if s.stopping.Load() {
		// A socket accepted now would be closed with 1001 at once.
		return store.Errorf(store.CodeUnavailable, "server is shutting down: reconnect")
	}
	if origin := c.Get(fiber.HeaderOrigin); origin != "" && !s.cfg.origins.allowed(origin) && !sameOrigin(c, origin) {
		return store.Errorf(store.CodeForbidden, "origin %q is not allowed (CORS_ORIGINS)", origin)
	}
	token := c.Query("token")
	if h := c.Get(fiber.HeaderAuthorization); h != "" || token == "" {
		var err error
		if token, err = bearer(h); err != nil {
			return s.challenge(c, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.RequestTimeout)
	defer cancel()
	claims, err := s.verifier.Verify(ctx, token)
	if err != nil {
		return s.challenge(c, err)
	}
	if v := c.Query("since"); v != "" {
		since, err := parseSinceQuery(v)
		if err != nil {
			return err
		}
		c.Locals(sinceKey, since)
	}
	c.Locals(userKey, utils.CopyString(claims.UserID))
	c.Locals(expiresKey, claims.Expires)
	return c.Next()
}

// sameOrigin reports whether origin is this server's own (the console it
// serves), the usual same-host check.
func sameOrigin(c *fiber.Ctx, origin string) bool {
	u, err := url.Parse(origin)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host == string(c.Request().Host())
}

// wsServe runs one socket for its whole life (contrib/websocket pools the
// Conn once this returns).
func (s *Server) wsServe(conn *websocket.Conn) {
	sess := realtime.Session{}
	sess.User, _ = conn.Locals(userKey).(string)
	sess.Expires, _ = conn.Locals(expiresKey).(time.Time)
	if since, ok := conn.Locals(sinceKey).(int64); ok {
		sess.Since = &since
	}
	s.hub.Serve(s.baseCtx, conn, sess, s)
}

// HandleFrame handles the application frames of a socket: auth (a fresh
// token for the same user), chat and cancel (chat.go).
func (s *Server) HandleFrame(c *realtime.Client, typ string, raw []byte) {
	switch typ {
	case "auth":
		s.wsAuth(c, raw)
	case "chat":
		s.wsChat(c, raw)
	case "cancel":
		s.wsCancel(c, raw)
	default:
		c.Send(realtime.ErrorFrame(store.CodeBadRequest, "unknown frame type "+quote(typ)))
	}
}

// wsAuth swaps in a fresh token: {"type":"auth","token":"..."}. A token of
// another user, or a user deleted since the socket opened, closes the
// socket.
func (s *Server) wsAuth(c *realtime.Client, raw []byte) {
	if err := s.socketUser(c); err != nil {
		c.Send(realtime.ErrorFrame(store.ErrorCode(err), store.ErrorMessage(err)))
		return
	}
	var f struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(raw, &f); err != nil || f.Token == "" {
		c.Send(realtime.ErrorFrame(store.CodeBadRequest, `auth frame needs a "token"`))
		return
	}
	ctx, cancel := context.WithTimeout(c.Context(), s.cfg.RequestTimeout)
	defer cancel()
	claims, err := s.verifier.Verify(ctx, f.Token)
	switch {
	case err != nil:
		c.Send(realtime.ErrorFrame(store.ErrorCode(err), store.ErrorMessage(err)))
		return
	case claims.UserID != c.User():
		c.Close(realtime.CloseForbidden, "token is for another user")
		return
	}
	c.SetExpires(claims.Expires)
	data, _ := json.Marshal(map[string]any{"type": "auth.ok", "expires_at": claims.Expires.UTC()})
	c.Send(data)
}

func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
