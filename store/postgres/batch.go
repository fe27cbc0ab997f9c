package postgres

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/evotodo/evo/store"
)

// Group commit. Every todo change (CreateTodo, UpdateTodo, DeleteTodo) is queued to the
// DB's batcher. At most maxFlushes batches are in flight, each on its own connection;
// a change that finds a flush free is sent at once, alone, by its own caller (no waiting
// and no hand-over to another goroutine at low load), and
// the changes that arrive while every flush is busy wait for the next free one and go
// together, up to maxBatch: the window is the duration of one batch's round trip and
// commit, about a millisecond. A batch is one pgx.Batch: one round trip, one implicit
// transaction (the statements and one Sync), one commit, one WAL flush. Each change is
// its own changeSQL statement, which allocates its user's next seq and appends its event;
// the callers get their answers after the commit.
//
// A not-found change (an update or delete of a missing todo) is a statement that returns
// no row: its caller gets CodeNotFound and the batch goes on. Any statement that fails
// (a foreign key whose user was deleted, a deadlock, a constraint of an older schema)
// aborts the whole transaction; PostgreSQL rolled it back, so each member is then run
// again alone, in order, as its own transaction: only the bad one fails. A connection
// that breaks during the batch leaves its outcome unknown: every member gets
// CodeUnavailable, as a single statement would.
//
// Lock order. The members are sorted by user (stably: one user's changes keep their
// order, and their seqs follow it), so every batch takes the locks of user A before those
// of user B: two batches cannot wait on each other across users. Within a user, a
// statement locks its todo row first and the user's seq row second; a batch with several
// changes of one user that touch existing todos first locks all those todo rows (sorted
// by id) in one statement, so that no batch holds the seq row while it waits for a todo
// row another batch holds while that one waits for the seq row. A deadlock that remains
// (with an outside writer, e.g. a user being deleted) is a failed statement: one by one.
//
// A caller whose context ends while its change is still queued takes it back (nothing is
// written); once its batch was sent, the caller returns the context's error at once and
// the change may or may not commit, as with any statement a client stops waiting for.
// (A caller that sends its change itself waits for that statement, which runs until
// the caller's deadline at most, or defaultBatchDeadline without one; it does not stop
// for a cancellation.)
// The batch itself runs until the latest deadline of its members: one caller's
// cancellation never fails its neighbours.

const (
	// maxBatch is the most changes in one batch.
	maxBatch = 128
	// defaultBatchDeadline bounds a batch whose members have no deadline.
	defaultBatchDeadline = time.Minute
)

// pending states.
const (
	queued int32 = iota
	taken
	abandoned
)

// pending is one change waiting for its batch.
type pending struct {
	userID   string
	typ      string
	query    string
	args     []any  // $1 on
	lockID   string // update and delete: the todo's id
	deadline time.Time
	state    atomic.Int32
	ev       store.Event
	err      error
	done     chan struct{}
}

// batcher queues changes and flushes them in batches.
type batcher struct {
	db         *DB
	maxFlushes int // batches in flight at most
	maxBatch   int

	mu      sync.Mutex
	queue   []*pending
	running int // flush loops running

	// Flushed batches, their changes, and batches run again one by one: for tests.
	batches, changes, fallbacks atomic.Int64
}

func newBatcher(db *DB, maxFlushes int) *batcher {
	return &batcher{db: db, maxFlushes: max(1, maxFlushes), maxBatch: maxBatch}
}

// submit runs p in a batch and returns when its batch has committed or failed, or ctx
// is done. Errors are wrapped (see wrap).
func (b *batcher) submit(ctx context.Context, p *pending) error {
	if err := ctx.Err(); err != nil {
		return wrap(p.typ, err)
	}
	p.done = make(chan struct{})
	p.deadline, _ = ctx.Deadline()
	b.mu.Lock()
	b.queue = append(b.queue, p)
	if b.running < b.maxFlushes {
		// A flush is free, so nothing else was queued: this caller flushes its change
		// itself (no hand-over to another goroutine and back at low load) and hands
		// whatever queued meanwhile to a flush loop.
		b.running++
		batch := b.takeLocked()
		b.mu.Unlock()
		b.flush(batch)
		if next := b.next(); next != nil {
			go b.flushLoop(next)
		}
	} else {
		b.mu.Unlock()
	}
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		select {
		case <-p.done: // done after all: its answer is known
			return p.err
		default:
		}
		// Taken back while queued, nothing is written; once sent, it may commit, as a
		// statement cancelled in flight may.
		p.state.CompareAndSwap(queued, abandoned)
		return wrap(p.typ, ctx.Err())
	}
}

// takeLocked takes the next batch off the queue. b.mu is held.
func (b *batcher) takeLocked() []*pending {
	n := min(len(b.queue), b.maxBatch)
	batch := slices.Clone(b.queue[:n])
	clear(b.queue[:n])
	b.queue = b.queue[n:]
	if len(b.queue) == 0 {
		b.queue = nil // let the backing array go
	}
	return batch
}

// flushLoop flushes batch, then the next ones queued meanwhile, until the queue is empty.
func (b *batcher) flushLoop(batch []*pending) {
	for batch != nil {
		b.flush(batch)
		batch = b.next()
	}
}

// next takes the next batch off the queue for a flush that ended, or returns nil and
// frees the flush when nothing is queued.
func (b *batcher) next() []*pending {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.queue) == 0 {
		b.running--
		return nil
	}
	return b.takeLocked()
}

// flush writes the members of batch that are still wanted and answers them.
func (b *batcher) flush(batch []*pending) {
	live := batch[:0]
	var deadline time.Time
	for _, p := range batch {
		if !p.state.CompareAndSwap(queued, taken) {
			continue // its caller gave up while it was queued
		}
		live = append(live, p)
		if p.deadline.IsZero() {
			p.deadline = time.Now().Add(defaultBatchDeadline)
		}
		if p.deadline.After(deadline) {
			deadline = p.deadline
		}
	}
	if len(live) == 0 {
		return
	}
	b.batches.Add(1)
	b.changes.Add(int64(len(live)))
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	slices.SortStableFunc(live, func(x, y *pending) int { return cmp.Compare(x.userID, y.userID) })
	if len(live) == 1 {
		b.db.one(ctx, live[0])
	} else if err := b.db.many(ctx, live); err != nil {
		if rolledBack(err) {
			b.fallbacks.Add(1)
			for _, p := range live {
				b.db.one(ctx, p)
			}
		} else {
			for _, p := range live {
				p.err = wrap(p.typ, err)
			}
		}
	}
	for _, p := range live {
		close(p.done)
	}
}

// rolledBack reports whether a failed batch is known not to have committed: PostgreSQL
// refused one of its statements (the implicit transaction is then rolled back), or
// nothing of it reached the server.
func rolledBack(err error) bool {
	var pe *pgconn.PgError
	var pre pgx.ErrPreprocessingBatch
	return errors.As(err, &pe) && !connectionLost(err) || errors.As(err, &pre) || pgconn.SafeToRetry(err)
}

// one runs p alone, in its own transaction.
func (db *DB) one(ctx context.Context, p *pending) {
	p.err = wrap(p.typ, scanChange(db.pool.QueryRow(ctx, p.query, p.args...), p))
}

// scanChange reads the row of a change statement into p.ev.
func scanChange(row pgx.Row, p *pending) error {
	t := &p.ev.Todo
	err := row.Scan(&t.ID, &t.UserID, &t.Title, &t.Description, &t.IsComplete, &t.CreatedAt, &t.UpdatedAt, &p.ev.Seq)
	t.CreatedAt, t.UpdatedAt = t.CreatedAt.UTC(), t.UpdatedAt.UTC()
	return err
}

// lockTodosSQL locks the existing todos a batch changes for one user, in id order,
// before any of that user's statements takes the user's seq row (see Lock order).
const lockTodosSQL = `SELECT FROM todos WHERE user_id = $1 AND id = ANY($2::text[]::uuid[]) ORDER BY id FOR UPDATE`

// many runs live (sorted by user) as one batch: one round trip, one transaction. A
// not-found member is answered and the others go on; any other failure is returned, and
// then nothing was answered.
func (db *DB) many(ctx context.Context, live []*pending) error {
	var bt pgx.Batch
	locks := make([]bool, 0, len(live)+4) // per queued query: the lock statement?
	for i := 0; i < len(live); {
		j := i + 1
		for j < len(live) && live[j].userID == live[i].userID {
			j++
		}
		if j-i > 1 {
			var ids []string
			for _, p := range live[i:j] {
				if p.lockID != "" {
					ids = append(ids, p.lockID)
				}
			}
			if len(ids) > 0 {
				bt.Queue(lockTodosSQL, live[i].userID, ids)
				locks = append(locks, true)
			}
		}
		for _, p := range live[i:j] {
			bt.Queue(p.query, p.args...)
			locks = append(locks, false)
		}
		i = j
	}
	br := db.pool.SendBatch(ctx, &bt)
	errs := make([]error, len(live))
	k := 0
	var failed error
	for _, lock := range locks {
		if lock {
			if _, err := br.Exec(); err != nil {
				failed = err
				break
			}
			continue
		}
		p := live[k]
		err := scanChange(br.QueryRow(), p)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			failed = err
			break
		}
		errs[k] = wrap(p.typ, err)
		k++
	}
	// Close reads the rest and the commit's outcome: nobody is answered before it.
	if err := br.Close(); failed == nil {
		failed = err
	}
	if failed != nil {
		return failed
	}
	for i, p := range live {
		p.err = errs[i]
	}
	return nil
}
