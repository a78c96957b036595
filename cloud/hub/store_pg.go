package hub

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
)

// PostgreSQL: the store several c2d-hub nodes share. The SQL is the SQLite store's (store_sql_*.go)
// with numbered placeholders; what differs is in pgDialect: rows a write goes on to change are
// locked (FOR UPDATE) so concurrent nodes take turns per device, sweeps skip rows another node
// holds (FOR UPDATE SKIP LOCKED) so every timer fires once for the cluster, conflicts between
// nodes (deadlock, serialization failure) are retried, and the database clock is the hub's clock.

// pgLockMigrate is the advisory lock key held while the schema is migrated: nodes starting at once
// migrate one after the other (the later ones find the work done).
const (
	pgLockMigrate int64 = 0x63326468_00000001 // "c2dh" 1
	pgLockBatches int64 = 0x63326468_00000002 // "c2dh" 2: forming feedback batches
)

// pgWriters group-committing writers share the load, each with its own lane of devices
// (sqlStore.updateFor). One writer spends most of its time waiting for the server's answers while
// the server waits for its next statement; three kept both busy on a 2-core machine where one
// reached about half their rate (docs/benchmarks.md, "PostgreSQL: where the time goes").
const pgWriters = 3

func pgDialect() *dialect {
	return &dialect{
		name:        "postgres",
		writers:     pgWriters,
		fused:       true,
		numbered:    true,
		forUpdate:   " FOR UPDATE",
		skipLocked:  " FOR UPDATE SKIP LOCKED",
		batchLock:   "SELECT pg_advisory_xact_lock(" + strconv.FormatInt(pgLockBatches, 10) + ")",
		readOpts:    &sql.TxOptions{ReadOnly: true, Isolation: sql.LevelRepeatableRead},
		opTimeout:   15 * time.Second,
		retryable:   pgRetryable,
		unavailable: pgUnavailable,
		serverTime:  "SELECT (EXTRACT(EPOCH FROM clock_timestamp()) * 1000000)::BIGINT",
	}
}

// pgRetryable: the transaction lost a conflict with another node's and may simply run again.
func pgRetryable(err error) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return false
	}
	switch pe.Code {
	case "40001", "40P01": // serialization_failure, deadlock_detected
		return true
	}
	return false
}

// pgUnavailable: err says the server cannot be reached or is not serving (as opposed to a refusal
// of one statement): the node is unhealthy until it answers again.
func pgUnavailable(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case strings.HasPrefix(pe.Code, "08"), // connection exception
			pe.Code == "57P01", pe.Code == "57P02", pe.Code == "57P03", // shutdown, cannot connect now
			pe.Code == "53300", // too many connections
			pe.Code == "25006": // read-only transaction: a standby after failover, not promoted yet
			return true
		}
		return false
	}
	var ne net.Error
	var ce *pgconn.ConnectError
	return errors.As(err, &ne) || errors.As(err, &ce) || errors.Is(err, driver.ErrBadConn) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, context.DeadlineExceeded) || pgconn.Timeout(err) ||
		strings.Contains(err.Error(), "conn closed")
}

// IsPostgresURL reports whether a store setting names a PostgreSQL server: a postgres:// or
// postgresql:// URL, or a libpq key=value connection string ("host=db1 dbname=c2d").
func IsPostgresURL(s string) bool {
	s = strings.TrimSpace(s)
	return strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://") ||
		(strings.Contains(s, "=") && !strings.Contains(s, "://"))
}

// StoreName is how a store setting is named in messages and logs: the server and database of a
// PostgreSQL connection string without its password, or the SQLite file.
func StoreName(store, dataDir string) string {
	if store == "" || store == "sqlite" {
		return "sqlite " + dataDir + "/hub.db"
	}
	cfg, err := pgconn.ParseConfig(store)
	if err != nil {
		return "postgres (unparsable connection string)"
	}
	return "postgres://" + cfg.User + "@" + net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port))) + "/" + cfg.Database
}

// openPostgres connects to the server, migrates the schema under an advisory lock and starts the
// writer. A bad connection string, an unreachable server or a schema from a newer c2d-hub is an
// error naming the store (without its password).
func openPostgres(ctx context.Context, url string, log logger) (*sqlStore, error) {
	name := StoreName(url, "")
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		// pgx's message may quote the string, password included: keep only its kind.
		var pe *pgconn.ParseConfigError
		if errors.As(err, &pe) && pe.Unwrap() != nil {
			return nil, fmt.Errorf("store: %s is not a PostgreSQL connection string: %v", redact(url), pe.Unwrap())
		}
		return nil, fmt.Errorf("store: %s is not a PostgreSQL connection string", redact(url))
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 10 * time.Second
	}
	// The hub's own statements are few and fixed: pgx prepares and caches each once per connection.
	cfg.DefaultQueryExecMode = pgx.QueryExecModeCacheStatement
	open := func(conns int) *sql.DB {
		d := stdlib.OpenDB(*cfg)
		d.SetMaxOpenConns(conns)
		d.SetMaxIdleConns(conns)
		d.SetConnMaxIdleTime(5 * time.Minute)
		return d
	}
	// Each writer runs one transaction at a time; one more connection serves pings and the
	// schema lock without waiting for them.
	w, r := open(pgWriters+1), open(8)
	fail := func(err error) (*sqlStore, error) {
		w.Close()
		r.Close()
		return nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout+5*time.Second)
	defer cancel()
	if err := w.PingContext(pctx); err != nil {
		return fail(fmt.Errorf("store %s: connect: %w", name, err))
	}
	if err := migratePostgres(pctx, w); err != nil {
		return fail(fmt.Errorf("store %s: %w", name, err))
	}
	st := newSQLStore(w, r, nil, nil, pgDialect(), log)
	st.pgCfg = cfg
	return st, nil
}

// redact hides the password of a connection string (URL or key=value) for error messages.
func redact(s string) string {
	if i := strings.Index(s, "://"); i >= 0 {
		rest := s[i+3:]
		if at := strings.LastIndex(rest, "@"); at >= 0 {
			if c := strings.Index(rest[:at], ":"); c >= 0 {
				rest = rest[:c] + ":xxxxx" + rest[at:]
			}
		}
		s = s[:i+3] + rest
		if q := strings.Index(s, "password="); q >= 0 {
			s = s[:q] + "password=xxxxx"
		}
		return s
	}
	fields := strings.Fields(s)
	for i, f := range fields {
		if strings.HasPrefix(strings.ToLower(f), "password=") {
			fields[i] = "password=xxxxx"
		}
	}
	return strings.Join(fields, " ")
}

// pgDDL is a migration as PostgreSQL runs it: the migrations are written for SQLite in the subset
// both engines share, except for these two spellings.
func pgDDL(q string) string {
	q = strings.ReplaceAll(q, "INTEGER PRIMARY KEY", "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY")
	return strings.ReplaceAll(q, "BLOB", "BYTEA")
}

// migratePostgres takes the schema to len(migrations) under a session advisory lock, each step in
// its own transaction with the version (table c2d_schema) it reaches, then creates pgFunctions. A
// newer schema is refused.
func migratePostgres(ctx context.Context, db *sql.DB) error {
	conn, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "SELECT pg_advisory_lock($1)", pgLockMigrate); err != nil {
		return fmt.Errorf("lock the schema for migration: %w", err)
	}
	defer conn.ExecContext(context.Background(), "SELECT pg_advisory_unlock($1)", pgLockMigrate)
	if _, err := conn.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS c2d_schema (version INTEGER NOT NULL)`); err != nil {
		return fmt.Errorf("create the schema version table: %w", err)
	}
	v, found := 0, true
	if err := conn.QueryRowContext(ctx, `SELECT version FROM c2d_schema`).Scan(&v); errors.Is(err, sql.ErrNoRows) {
		found = false
	} else if err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if v > len(migrations) {
		return fmt.Errorf("schema version %d is newer than this c2d-hub knows (%d): upgrade c2d-hub", v, len(migrations))
	}
	for ; v < len(migrations); v++ {
		tx, err := conn.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("migrate to schema %d: %w", v+1, err)
		}
		step := func() error {
			if _, err := tx.ExecContext(ctx, pgDDL(migrations[v])); err != nil {
				return err
			}
			q := `UPDATE c2d_schema SET version = $1`
			if !found {
				q, found = `INSERT INTO c2d_schema (version) VALUES ($1)`, true
			}
			_, err := tx.ExecContext(ctx, q, v+1)
			return err
		}
		if err := step(); err != nil {
			tx.Rollback()
			return fmt.Errorf("migrate to schema %d: %w", v+1, err)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("migrate to schema %d: %w", v+1, err)
		}
	}
	return createPgFunctions(ctx, conn)
}

// pgFunctions are the store's server-side functions. Each name carries its version: a changed
// function gets a new name, so nodes of the old and the new c2d-hub running side by side (a
// rolling upgrade) each call their own. They are created (or replaced by the same text) at every
// start, after the migrations, under the migration lock; they hold no data.
var pgFunctions = []string{pgEnqueue2, pgEnqueue3}

// pgEnqueue3 is c2d_enqueue_2 that also returns its transaction's id (xid), so that a send whose
// COMMIT lost its answer can ask the server what became of it (txid_status; commit_unknown.go).
var pgEnqueue3 = strings.NewReplacer(
	"c2d_enqueue_2(", "c2d_enqueue_3(",
	"OUT locked BOOLEAN)", "OUT locked BOOLEAN, OUT xid BIGINT)",
	"known := false; pending := 0; seq := 0; locked := false;", "known := false; pending := 0; seq := 0; locked := false; xid := 0;",
	"\tEND $$", "\t\txid := txid_current();\n\tEND $$",
).Replace(pgEnqueue2)

// pgEnqueue2, c2d_enqueue_2, is enqueueFirst (store_sql_hot.go) in one round trip: the device row is
// locked (by taking the next sequence number, given back when the queue is full), then the
// queue counted, the owner checked and the message inserted by statements of
// their own. In READ COMMITTED each statement of a volatile function takes a new snapshot, so
// the count sees every message committed before the lock was granted (concurrent nodes take
// turns per device). known false: no such device; seq 0: the queue is full (pending
// messages), nothing written. With a prefix (p_prefix not empty) the message goes in locked for
// its first delivery when p_node holds the device at p_epoch (the session row locked until the
// transaction ends, as every conditional write locks it) and none of the device's messages is
// Enqueued. Lock order: the device row, then its session row; nothing locks them the other
// way round. (c2d_enqueue_1, which locked nothing, is what earlier nodes call.)
const pgEnqueue2 = `CREATE OR REPLACE FUNCTION c2d_enqueue_2(p_device TEXT, p_max BIGINT, p_message_id TEXT,
		p_correlation_id TEXT, p_user_id TEXT, p_ack TEXT, p_content_type TEXT,
		p_content_encoding TEXT, p_properties TEXT, p_body BYTEA, p_enqueued_at BIGINT,
		p_expires_at BIGINT, p_explicit_expiry INTEGER, p_enqueued TEXT, p_invisible TEXT,
		p_node TEXT, p_epoch BIGINT, p_prefix TEXT, p_until BIGINT,
		OUT known BOOLEAN, OUT pending BIGINT, OUT seq BIGINT, OUT locked BOOLEAN)
	LANGUAGE plpgsql VOLATILE AS $$
	BEGIN
		known := false; pending := 0; seq := 0; locked := false;
		-- The increment locks the device row; a full queue (rare) takes it back.
		UPDATE devices SET last_seq = last_seq + 1 WHERE device_id = p_device RETURNING last_seq INTO seq;
		IF NOT FOUND THEN
			seq := 0;
			RETURN;
		END IF;
		known := true;
		SELECT COUNT(*) INTO pending FROM messages WHERE device_id = p_device;
		IF pending >= p_max THEN
			UPDATE devices SET last_seq = last_seq - 1 WHERE device_id = p_device;
			seq := 0;
			RETURN;
		END IF;
		IF p_prefix <> '' THEN
			IF p_node = '' THEN
				locked := true;
			ELSE
				PERFORM 1 FROM device_sessions WHERE device_id = p_device AND node_id = p_node
					AND epoch = p_epoch FOR UPDATE;
				locked := FOUND;
			END IF;
			IF locked THEN
				locked := NOT EXISTS (SELECT 1 FROM messages WHERE device_id = p_device AND state = p_enqueued);
			END IF;
		END IF;
		IF locked THEN
			INSERT INTO messages (device_id, seq, message_id, correlation_id, user_id, ack,
				content_type, content_encoding, properties, body, enqueued_at, expires_at,
				explicit_expiry, state, delivery_count, lock_token, locked_until)
			VALUES (p_device, seq, p_message_id, p_correlation_id, p_user_id, p_ack, p_content_type,
				p_content_encoding, p_properties, p_body, p_enqueued_at, p_expires_at,
				p_explicit_expiry, p_invisible, 1, p_prefix || seq::text, p_until);
		ELSE
			INSERT INTO messages (device_id, seq, message_id, correlation_id, user_id, ack,
				content_type, content_encoding, properties, body, enqueued_at, expires_at,
				explicit_expiry, state, delivery_count, lock_token, locked_until)
			VALUES (p_device, seq, p_message_id, p_correlation_id, p_user_id, p_ack, p_content_type,
				p_content_encoding, p_properties, p_body, p_enqueued_at, p_expires_at,
				p_explicit_expiry, p_enqueued, 0, NULL, NULL);
		END IF;
	END $$`

// createPgFunctions creates pgFunctions; the migration lock is held.
func createPgFunctions(ctx context.Context, conn *sql.Conn) error {
	for _, f := range pgFunctions {
		if _, err := conn.ExecContext(ctx, f); err != nil {
			return fmt.Errorf("create server-side functions: %w", err)
		}
	}
	return nil
}

// readPostgresPolicies reads the policies from a PostgreSQL store without migrating or starting
// anything (`c2d-hub connection-string --store`).
func readPostgresPolicies(ctx context.Context, url string) ([]Policy, error) {
	name := StoreName(url, "")
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("store: %s is not a PostgreSQL connection string", redact(url))
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 10 * time.Second
	}
	db := stdlib.OpenDB(*cfg)
	defer db.Close()
	tx, err := db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("store %s: connect: %w", name, err)
	}
	defer tx.Rollback()
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM information_schema.tables WHERE table_name = 'c2d_schema'`).Scan(&n); err != nil {
		return nil, fmt.Errorf("store %s: %w", name, err)
	}
	if n == 0 {
		return nil, fmt.Errorf("store %s: no c2d-hub has started on it yet: %w", name, os.ErrNotExist)
	}
	ps, err := (&sqlTx{ctx: ctx, tx: tx, d: pgDialect()}).policies()
	if err != nil {
		return nil, fmt.Errorf("store %s: read policies: %w", name, err)
	}
	return ps, nil
}

// pgChannel carries the nodes' wake-ups (cluster.go).
const pgChannel = "c2d_hub"

// notify sends one wake-up to every node, outside any data transaction: NOTIFY inside busy write
// transactions serialises their commits on a cluster-wide lock.
func (s *sqlStore) notify(ctx context.Context, payload string) error {
	_, err := s.r.ExecContext(ctx, "SELECT pg_notify($1, $2)", pgChannel, payload)
	return s.classify(err)
}

// listen delivers every wake-up to fn (from one goroutine) until ctx ends or the connection
// fails. Notifications sent while no connection listened are lost: callers poll after (re)connecting.
func (s *sqlStore) listen(ctx context.Context, ready func(), fn func(payload string)) error {
	if s.pgCfg == nil {
		return errors.New("listen: not a PostgreSQL store")
	}
	conn, err := pgx.ConnectConfig(ctx, s.pgCfg)
	if err != nil {
		return s.classify(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN "+pgChannel); err != nil {
		return s.classify(err)
	}
	ready()
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return s.classify(err)
		}
		fn(n.Payload)
	}
}

// txStatus is PostgreSQL's txid_status of xid: "committed", "aborted", "in progress" (its
// backend has not finished it yet), or txFuture when the server has not handed out xid since it
// last started: a crash took the transaction before anything of it was durable, and the id will
// be handed out again (which is why "committed" alone does not prove a send was stored).
func (t *sqlTx) txStatus(xid int64) (string, error) {
	var st sql.NullString
	err := t.queryRow(`SELECT txid_status(?)`, xid).Scan(&st)
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "22023" { // invalid_parameter_value: "is in the future"
		return txFuture, nil
	}
	if err != nil {
		return "", err
	}
	if !st.Valid {
		return "", fmt.Errorf("transaction %d is too old for PostgreSQL to know its outcome", xid)
	}
	return st.String, nil
}

// txStatus's answers: txid_status's three, and txFuture for an id the server has not handed out
// since it started.
const (
	txCommitted  = "committed"
	txAborted    = "aborted"
	txInProgress = "in progress"
	txFuture     = "not yet assigned"
)
