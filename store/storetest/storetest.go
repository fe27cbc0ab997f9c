// Package storetest gives tests a fresh, migrated database of each backend:
// a new PostgreSQL database per test (dropped afterwards) and a SQLite file
// in the test's temporary directory.
package storetest

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/evotodo/evo/store"
	"github.com/evotodo/evo/store/postgres"
	"github.com/evotodo/evo/store/sqlite"
)

// AdminURL is the PostgreSQL server tests create their databases on:
// TEST_DATABASE_URL, or the local server with trust auth.
func AdminURL() string {
	if u := os.Getenv("TEST_DATABASE_URL"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
}

// Required reports whether a missing backend must fail the test instead of
// skipping it: in CI (CI is set) or when EVO_REQUIRE_BACKENDS is.
func Required() bool {
	return os.Getenv("CI") != "" || os.Getenv("EVO_REQUIRE_BACKENDS") != ""
}

// Unreachable skips tb (or fails it when backends are required) naming what
// is missing.
func Unreachable(tb testing.TB, what string, err error) {
	tb.Helper()
	if Required() {
		tb.Fatalf("%s is required here but unreachable: %v", what, err)
	}
	tb.Skipf("SKIP: %s unreachable (%v); set it up to run this test", what, err)
}

// PostgresURL creates an empty database for tb and returns its URL. The
// database is dropped when tb ends.
func PostgresURL(tb testing.TB) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, AdminURL())
	if err != nil {
		Unreachable(tb, "PostgreSQL ("+AdminURL()+")", err)
	}
	defer admin.Close(context.Background())
	name := "evo_test_" + strings.ToLower(rand.Text()[:12])
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		tb.Fatalf("create database: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, AdminURL())
		if err != nil {
			tb.Errorf("drop database %s: %v", name, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			tb.Errorf("drop database %s: %v", name, err)
		}
	})
	u, err := url.Parse(AdminURL())
	if err != nil {
		tb.Fatalf("parse %s: %v", AdminURL(), err)
	}
	u.Path = "/" + name
	return u.String()
}

// Postgres returns a migrated PostgreSQL store on a fresh database.
func Postgres(tb testing.TB) *postgres.DB {
	tb.Helper()
	ctx := context.Background()
	db, err := postgres.Open(ctx, PostgresURL(tb), 8)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	if err := db.Migrate(ctx, Quiet()); err != nil {
		tb.Fatal(err)
	}
	return db
}

// SQLite returns a migrated SQLite store in tb's temporary directory.
func SQLite(tb testing.TB) *sqlite.DB {
	tb.Helper()
	ctx := context.Background()
	db, err := sqlite.Open(ctx, tb.TempDir()+"/evo.db")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	if err := db.Migrate(ctx, Quiet()); err != nil {
		tb.Fatal(err)
	}
	return db
}

// Backend names a store implementation for table-driven suites.
type Backend struct {
	Name string
	Open func(testing.TB) store.DB
}

// Backends lists both stores.
func Backends() []Backend {
	return []Backend{
		{"sqlite", func(tb testing.TB) store.DB { return SQLite(tb) }},
		{"postgres", func(tb testing.TB) store.DB { return Postgres(tb) }},
	}
}

// User creates a user with a unique email.
func User(tb testing.TB, db store.DB) store.User {
	tb.Helper()
	email := fmt.Sprintf("%s@example.com", strings.ToLower(rand.Text()[:10]))
	u, err := db.EnsureUser(context.Background(), email, "Test "+email)
	if err != nil {
		tb.Fatal(err)
	}
	return u
}

// Quiet is a logger that drops everything.
func Quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
