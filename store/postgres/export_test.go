package postgres

// SetMaxFlushes sets how many change batches may be in flight at once.
func SetMaxFlushes(db *DB, n int) {
	db.batch.mu.Lock()
	defer db.batch.mu.Unlock()
	db.batch.maxFlushes = n
}

// Queued returns how many changes wait for a batch.
func Queued(db *DB) int {
	db.batch.mu.Lock()
	defer db.batch.mu.Unlock()
	return len(db.batch.queue)
}

// BatchStats returns the batches flushed, their changes, and the batches that failed
// and were run again one change at a time.
func BatchStats(db *DB) (batches, changes, fallbacks int64) {
	return db.batch.batches.Load(), db.batch.changes.Load(), db.batch.fallbacks.Load()
}
