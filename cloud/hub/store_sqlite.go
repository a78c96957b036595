package hub

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"

	_ "modernc.org/sqlite" // registers the pure-Go "sqlite" driver
)

// sqliteDialect: one writer connection (SQLite has one writer anyway), so serial; no row locks,
// the local clock.
func sqliteDialect() *dialect { return &dialect{name: "sqlite", serial: true} }

// openSQLite keeps everything in DATA/hub.db. One writer connection owned by one goroutine
// (group commit); a small pool of read-only connections for views (WAL lets them read while the
// writer writes).
func openSQLite(ctx context.Context, dataDir string, log logger) (*sqlStore, error) {
	path := filepath.Join(dataDir, "hub.db")
	// The database holds device and policy keys: create it private (SQLite gives its -wal and
	// -shm files the database file's permissions).
	if f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600); err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	} else {
		f.Close()
	}
	// synchronous=FULL with WAL: every commit fsyncs the WAL before returning, so a returned
	// commit survives power loss and kill -9.
	dsn := "file:" + path + "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)" +
		"&_pragma=synchronous(FULL)&_pragma=foreign_keys(1)&_txlock=immediate"
	w, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	// Only the writer goroutine uses w, one transaction at a time. The second connection lets a
	// statement be prepared in the background (stmtCache) while the first holds the transaction.
	w.SetMaxOpenConns(2)
	w.SetMaxIdleConns(2)
	w.SetConnMaxLifetime(0)
	if err := migrateSQLite(ctx, w); err != nil {
		w.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	r, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)&_pragma=query_only(1)")
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	r.SetMaxOpenConns(4)
	r.SetMaxIdleConns(4)
	return newSQLStore(w, r, newStmtCache(w), newStmtCache(r), sqliteDialect(), log), nil
}

func migrateSQLite(ctx context.Context, db *sql.DB) error {
	var v int
	if err := db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if v > len(migrations) {
		return fmt.Errorf("schema version %d is newer than this c2d-hub knows (%d): upgrade c2d-hub", v, len(migrations))
	}
	for ; v < len(migrations); v++ {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("migrate to schema %d: %w", v+1, err)
		}
		if _, err := tx.ExecContext(ctx, migrations[v]); err != nil {
			tx.Rollback()
			return fmt.Errorf("migrate to schema %d: %w", v+1, err)
		}
		// PRAGMA does not take parameters; v+1 is an integer we produced.
		if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", v+1)); err != nil {
			tx.Rollback()
			return fmt.Errorf("migrate to schema %d: %w", v+1, err)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("migrate to schema %d: %w", v+1, err)
		}
	}
	return nil
}
