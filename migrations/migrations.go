// Package migrations embeds Evo's SQL migrations, one folder per dialect,
// and applies them with goose: in order, each in its own transaction.
package migrations

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"log/slog"

	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

//go:embed postgres/*.sql sqlite/*.sql
var files embed.FS

// Dialects with migrations.
const (
	Postgres = "postgres"
	SQLite   = "sqlite"
)

// Up applies every pending migration of dialect to db.
func Up(ctx context.Context, db *sql.DB, dialect string, log *slog.Logger) error {
	gd := goose.DialectPostgres
	if dialect == SQLite {
		gd = goose.DialectSQLite3
	}
	fsys, err := fs.Sub(files, dialect)
	if err != nil {
		return fmt.Errorf("migrations for %s: %w", dialect, err)
	}
	var opts []goose.ProviderOption
	if dialect == Postgres {
		// Replicas that start together take turns: an advisory lock.
		locker, err := lock.NewPostgresSessionLocker()
		if err != nil {
			return fmt.Errorf("migration lock: %w", err)
		}
		opts = append(opts, goose.WithSessionLocker(locker))
	}
	p, err := goose.NewProvider(gd, db, fsys, opts...)
	if err != nil {
		return fmt.Errorf("migrations for %s: %w", dialect, err)
	}
	results, err := p.Up(ctx)
	if err != nil {
		return fmt.Errorf("apply %s migrations: %w", dialect, err)
	}
	for _, r := range results {
		log.Info("migration applied", slog.String("dialect", dialect), slog.Int64("version", r.Source.Version), slog.Duration("took", r.Duration))
	}
	version, err := p.GetDBVersion(ctx)
	if err != nil {
		return fmt.Errorf("%s migrations: read the version: %w", dialect, err)
	}
	if len(results) == 0 {
		log.Info("database schema up to date", slog.String("dialect", dialect), slog.Int64("version", version))
	} else {
		log.Info("database schema migrated", slog.String("dialect", dialect), slog.Int64("version", version), slog.Int("applied", len(results)))
	}
	return nil
}
