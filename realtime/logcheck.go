package realtime

import (
	"context"
	"log/slog"
	"time"
)

// LastSeqsReader is implemented by a History that reads the latest seq of many users
// in one query. The hub's log check uses it; without it the check reads LastSeq user by
// user.
type LastSeqsReader interface {
	// LastSeqs returns the latest seq of each of users; a user without events may be
	// left out (0).
	LastSeqs(ctx context.Context, users []string) (map[string]int64, error)
}

// logCheckBatch is the most users one LastSeqs read asks for.
const logCheckBatch = 1000

// The log check.
//
// Sockets learn of a user's events from the broker. An event whose publication never
// comes (its writer died between commit and publish, or the publish failed) is noticed
// by the sequencer only when a later event of the user arrives (GapWait), or by a
// socket when it reconnects. So, every Config.LogCheck, the hub reads the latest seq
// of every user with a socket on this replica (one query per logCheckBatch users) and
// compares it with what the user's sequencer handed on. A user found behind is
// remembered; if the sequencer is still behind that seq at the next check, the
// publication is taken as lost: the held publications are released and every socket of
// the user that has not sent that seq reads the log. An event committed at t is
// therefore read at a check in (t, t+LogCheck] and, if its publication did not arrive
// by the check after, delivered from the log then: within 2*LogCheck plus one log read.
// A publication that is merely in flight at the first check is never taken as lost.
//
// Cost: with no lost publication, ceil(users/1000) indexed reads per LogCheck per
// replica, nothing per socket. The check runs only while the hub has sockets.

// ensureLogCheck starts the log check if it is not running (a socket registered).
func (h *Hub) ensureLogCheck() {
	h.checkMu.Lock()
	defer h.checkMu.Unlock()
	if h.checking || h.bg.Err() != nil {
		return
	}
	h.checking = true
	h.checkWG.Add(1)
	go h.logCheckLoop()
}

// logCheckLoop runs the check every LogCheck until the hub has no socket or shuts down.
func (h *Hub) logCheckLoop() {
	defer h.checkWG.Done()
	t := time.NewTicker(h.cfg.LogCheck)
	defer t.Stop()
	for {
		select {
		case <-h.bg.Done():
			return
		case <-t.C:
		}
		h.checkMu.Lock()
		if h.conns.Load() == 0 { // register starts a new loop after its conns.Add
			h.checking = false
			h.checkMu.Unlock()
			return
		}
		h.checkMu.Unlock()
		h.checkLog()
	}
}

// checkLog runs one check (see above).
func (h *Hub) checkLog() {
	var users []string
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.RLock()
		for user, u := range sh.users {
			u.mu.Lock()
			if u.seq.known {
				users = append(users, user)
			}
			u.mu.Unlock()
		}
		sh.mu.RUnlock()
	}
	for len(users) > 0 {
		n := min(len(users), logCheckBatch)
		chunk := users[:n]
		users = users[n:]
		ctx, cancel := context.WithTimeout(h.bg, brokerTimeout)
		last, err := h.lastSeqs(ctx, chunk)
		cancel()
		if err != nil {
			if h.bg.Err() == nil {
				h.log.Warn("realtime: log check: read latest seqs", slog.Int("users", len(chunk)), slog.Any("error", err))
			}
			return
		}
		for _, user := range chunk {
			h.checkUser(user, last[user])
		}
	}
}

func (h *Hub) lastSeqs(ctx context.Context, users []string) (map[string]int64, error) {
	if r, ok := h.history.(LastSeqsReader); ok {
		if err := h.reads.Acquire(ctx, 1); err != nil {
			return nil, err
		}
		defer h.reads.Release(1)
		return r.LastSeqs(ctx, users)
	}
	out := make(map[string]int64, len(users))
	for _, user := range users {
		if err := h.reads.Acquire(ctx, 1); err != nil {
			return nil, err
		}
		seq, err := h.history.LastSeq(ctx, user)
		h.reads.Release(1)
		if err != nil {
			return nil, err
		}
		out[user] = seq
	}
	return out, nil
}

// checkUser compares the user's latest seq in the log with what their sequencer handed on.
func (h *Hub) checkUser(user string, last int64) {
	sh := h.shard(user)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	u := sh.users[user]
	if u == nil {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	switch {
	case !u.seq.known || last <= u.seq.high:
		u.behind = 0
	case u.behind == 0 || u.seq.high >= u.behind:
		u.behind = last // maybe in flight: look again at the next check
	default:
		// Still not delivered a whole check later: lost.
		from := u.seq.high
		u.seq.flush(u.fanOut)
		u.seq.high = max(u.seq.high, last)
		u.behind = 0
		h.log.Warn("realtime: committed events were never published, sockets read the event log",
			slog.String("user", user), slog.Int64("after", from), slog.Int64("last", last))
		for c := range u.clients {
			c.catchUpTo(last)
		}
	}
}
