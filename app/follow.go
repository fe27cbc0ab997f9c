package app

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/evotodo/evo/realtime"
	"github.com/evotodo/evo/store/sqlite"
)

// Following the shared event log (embedded mode).
//
// Other processes can write the SQLite file a server serves: `evo mcp`, and a
// second `evo serve` on the same DATA_DIR. They publish nowhere this server
// listens, so the server follows the log itself: every followInterval it
// reads the newest cursor (one seek) and, when it moved, hands the new events
// to its hub's local delivery. The hub's per-user sequencer drops what it
// handed on already (the server's own events, published when they
// committed), so each socket gets each event once, in seq order.

// followInterval is how often the server polls the shared event log: a change
// another process commits reaches the sockets within about this long.
const followInterval = 250 * time.Millisecond

// followBatch is the page size of one read of new events.
const followBatch = 500

// eventFeed is the log of every user's events in commit order, which a store
// shared with other processes offers (SQLite: *sqlite.DB).
type eventFeed interface {
	// EventCursor returns the cursor of the newest event, 0 if none.
	EventCursor(ctx context.Context) (int64, error)
	// EventsAfter returns up to limit events after cursor, in commit order.
	EventsAfter(ctx context.Context, cursor int64, limit int) ([]sqlite.LogEvent, error)
}

var _ eventFeed = (*sqlite.DB)(nil)

// followEvents delivers the events other processes commit to the shared log
// to this replica's sockets until ctx is done. It starts at the newest event:
// what came before reaches a socket by its resume.
func (s *Server) followEvents(ctx context.Context, feed eventFeed) {
	t := time.NewTicker(followInterval)
	defer t.Stop()
	cursor, started, failing := int64(0), false, false
	for {
		var err error
		if !started {
			cursor, err = feed.EventCursor(ctx)
			started = err == nil
		} else {
			cursor, err = s.followOnce(ctx, feed, cursor)
		}
		switch {
		case ctx.Err() != nil:
			return
		case err != nil && !failing:
			s.log.Warn("follow the event log: sockets get other processes' changes when they resume", slog.Any("error", err))
		case err == nil && failing:
			s.log.Info("follow the event log: reading again")
		}
		failing = err != nil
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// followOnce delivers the events after cursor and returns the new cursor.
func (s *Server) followOnce(ctx context.Context, feed eventFeed, cursor int64) (int64, error) {
	newest, err := feed.EventCursor(ctx)
	if err != nil {
		return cursor, err
	}
	if newest < cursor {
		// The rowids were renumbered (VACUUM) or the log emptied: start over
		// from the newest; a socket that missed something reads it from the
		// log at the user's next gap or resume.
		s.log.Warn("follow the event log: the log's cursor went back, following from its newest event",
			slog.Int64("cursor", cursor), slog.Int64("newest", newest))
		return newest, nil
	}
	for cursor < newest {
		evs, err := feed.EventsAfter(ctx, cursor, followBatch)
		if err != nil {
			return cursor, err
		}
		if len(evs) == 0 {
			return newest, nil
		}
		for _, e := range evs {
			data, err := json.Marshal(e.Event)
			if err != nil {
				return cursor, fmt.Errorf("encode event %d of user %s: %w", e.Event.Seq, e.UserID, err)
			}
			s.hub.DeliverLocal(e.UserID, realtime.Publication{Seq: e.Event.Seq, Data: data})
			cursor = e.Cursor
		}
	}
	return cursor, nil
}
