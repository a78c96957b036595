package server

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	_ "modernc.org/sqlite" // the hub's store driver (pure Go)

	"github.com/c2d-project/c2d/cloud/iothub"
)

// ErrNoPolicy is returned by ConnectionString for a policy the store does not have.
var ErrNoPolicy = errors.New("no such shared access policy")

// ConnectionString reads a shared access policy from DATA/hub.db and formats its service connection
// string for hostName. It only reads: it works while the hub runs (SQLite WAL lets a second process
// read) and never runs the hub's recovery or timers, which opening the hub would.
func ConnectionString(ctx context.Context, dataDir, hostName, policy string) (iothub.ServiceConnectionString, error) {
	var cs iothub.ServiceConnectionString
	path := filepath.Join(dataDir, "hub.db")
	if _, err := os.Stat(path); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return cs, fmt.Errorf("no hub store in %s (start `c2d-hub serve --data %s` once first)", dataDir, dataDir)
		}
		return cs, err
	}
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)&_pragma=query_only(1)")
	if err != nil {
		return cs, fmt.Errorf("open %s: %w", path, err)
	}
	defer db.Close()
	var key string
	err = db.QueryRowContext(ctx, `SELECT primary_key FROM policies WHERE name = ?`, policy).Scan(&key)
	if errors.Is(err, sql.ErrNoRows) {
		names, _ := policyNames(ctx, db)
		return cs, fmt.Errorf("%w %q in %s (have: %s)", ErrNoPolicy, policy, path, strings.Join(names, ", "))
	}
	if err != nil {
		return cs, fmt.Errorf("read policy %q from %s: %w", policy, path, err)
	}
	return iothub.ServiceConnectionString{HostName: hostName, SharedAccessKeyName: policy, SharedAccessKey: key}, nil
}

func policyNames(ctx context.Context, db *sql.DB) ([]string, error) {
	rows, err := db.QueryContext(ctx, `SELECT name FROM policies`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, err
		}
		names = append(names, n)
	}
	sort.Strings(names)
	return names, rows.Err()
}
