package store

import (
	"crypto/rand"
	"encoding/json"
	"time"

	"github.com/google/uuid"
)

// NewID returns a new random (version 4) UUID string.
func NewID() string { return uuid.NewString() }

// NewUserID returns a 32-character alphanumeric id, shaped like Better Auth's.
func NewUserID() string {
	return rand.Text()[:26] + rand.Text()[:6]
}

// Now returns the current time in UTC at the microsecond precision both
// databases keep.
func Now() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }

// NewChatMessage fills in the id, times and defaults of a message to store.
func NewChatMessage(m ChatMessage) ChatMessage {
	if m.ID == "" {
		m.ID = NewID()
	}
	if m.CreatedAt.IsZero() {
		m.CreatedAt = Now()
	}
	m.UpdatedAt = m.CreatedAt
	if len(m.ToolCalls) == 0 {
		m.ToolCalls = json.RawMessage("[]")
	}
	if m.Status == "" {
		m.Status = "completed"
	}
	return m
}

// PruneEventsSQL is the event-log pruning statement shared by both dialects,
// with the placeholders for keep (a count) and before (a time).
func PruneEventsSQL(keep, before string) string {
	return `DELETE FROM todo_events WHERE EXISTS (
		SELECT 1 FROM user_seqs s WHERE s.user_id = todo_events.user_id
		AND todo_events.seq < s.seq
		AND (todo_events.seq <= s.seq - ` + keep + ` OR todo_events.created_at < ` + before + `))`
}
