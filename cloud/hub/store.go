package hub

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"

	_ "modernc.org/sqlite" // registers the pure-Go "sqlite" driver
)

// store is the durable state behind the hub. The queue logic sees only this interface and the
// typed storeTx, so it does not depend on SQLite and another store (PostgreSQL behind several hubs)
// can replace it.
type store interface {
	// update runs fn in a write transaction and returns after the transaction committed (fn's
	// error, or the commit's). Concurrent updates are group-committed: each runs inside its own
	// savepoint of one shared transaction, so a failing fn undoes only its own writes.
	update(ctx context.Context, fn func(tx storeTx) error) error
	// view runs fn in a read-only transaction (a consistent snapshot).
	view(ctx context.Context, fn func(tx storeTx) error) error
	// close finishes the updates already submitted, then closes; later calls return ErrClosed.
	close() error
}

// deviceRow is a registry entry as stored.
type deviceRow struct {
	ID           string
	GenerationID string
	ETag         string
	Status       iothub.DeviceStatus
	StatusReason string
	PrimaryKey   string
	SecondaryKey string
	LastSeq      int64 // the last sequence number given (0: none yet)
	UpdatedAt    time.Time
}

// msgRow is a message as stored: pending (State Enqueued/Invisible) or settled (Outcome set).
type msgRow struct {
	DeviceID        string
	Seq             int64
	MessageID       string
	CorrelationID   string
	UserID          string
	Ack             iothub.AckMode
	ContentType     string
	ContentEncoding string
	Properties      []iothub.AppProperty
	Body            []byte
	EnqueuedAt      time.Time
	ExpiresAt       time.Time
	ExplicitExpiry  bool // the sender set the expiry ($.exp is delivered only then)
	State           iothub.MessageState
	DeliveryCount   int
	LockToken       string
	LockedUntil     time.Time

	Outcome   iothub.FeedbackStatus
	Reason    string
	SettledAt time.Time
}

// batchRow is a feedback batch as stored.
type batchRow struct {
	ID            int64
	EnqueuedAt    time.Time
	ExpiresAt     time.Time
	DeliveryCount int
	LockToken     string
	LockedUntil   time.Time
}

// storeTx is what the hub does to its state inside one transaction.
type storeTx interface {
	// registry
	device(id string) (deviceRow, bool, error)
	devices() ([]deviceRow, error)
	insertDevice(d deviceRow) error
	updateDevice(d deviceRow) error
	deleteDevice(id string) error // with its messages, settled outcomes and pending feedback
	policies() ([]Policy, error)
	insertPolicy(p Policy) error

	// pending messages
	sendInfo(deviceID string) (lastSeq int64, pending int, found bool, err error)
	setLastSeq(deviceID string, seq int64) error
	pendingCount(deviceID string) (int, error)
	pendingCounts() (map[string]int, error)
	insertMessage(m *msgRow) error
	enqueued(deviceID string, limit int) ([]msgRow, error)
	pending(deviceID string) ([]msgRow, error)
	byToken(deviceID, token string) (msgRow, bool, error)
	byMessageID(deviceID, messageID string) (msgRow, bool, error) // pending or settled, newest
	setLock(deviceID string, seq int64, token string, until time.Time, deliveryCount int) error
	requeue(deviceID string, seq int64) error
	settle(m *msgRow) error // moves m to the settled outcomes (m.Outcome, Reason, SettledAt set)
	lockExpired(now time.Time, limit int) ([]msgRow, error)
	ttlExpired(now time.Time, limit int) ([]msgRow, error) // Enqueued only
	invisible() ([]msgRow, error)
	nextMessageDeadline() (time.Time, error) // earliest lock expiry or Enqueued expiry; zero if none
	pruneSettled(before time.Time) (int64, error)

	// feedback
	insertRecord(r iothub.FeedbackRecord, createdAt time.Time) error
	unbatched() (count int, oldest time.Time, err error)
	formBatch(b batchRow, limit int) (int, error) // assigns up to limit unbatched records to a new batch b
	maxBatchID() (int64, error)
	availableBatch(now time.Time) (batchRow, bool, error)
	batchByToken(token string) (batchRow, bool, error)
	batchRecords(id int64) ([]iothub.FeedbackRecord, error)
	lockBatch(id int64, token string, until time.Time, deliveryCount int) error
	unlockBatch(id int64) error
	deleteBatch(id int64) error
	lockExpiredBatches(now time.Time) ([]batchRow, error)
	expiredBatches(now time.Time) ([]int64, error)
	nextBatchDeadline() (time.Time, error)
	unlockAllBatches() (int64, error)
	pendingFeedback() (int, error)
}

// ---- SQLite ----

// sqliteStore keeps everything in DATA/hub.db. One writer connection owned by one goroutine
// (group commit); a small pool of read-only connections for views (WAL lets them read while the
// writer writes).
type sqliteStore struct {
	w, r   *sql.DB
	wc, rc *stmtCache // prepared statements of w and r
	log    logger

	reqs     chan *writeReq
	mu       sync.RWMutex // held for reading while submitting; Close takes it to stop submissions
	closed   bool
	stopped  chan struct{}
	commits  atomic.Int64 // transactions committed (benchmarks report operations per commit)
	maxBatch int
}

type writeReq struct {
	fn   func(tx storeTx) error
	done chan error
}

type logger interface {
	Error(msg string, args ...any)
}

// migrations[i] takes the schema from version i to i+1; PRAGMA user_version holds the version, so
// the schema is len(migrations) after Open. The SQL is kept to what PostgreSQL also
// runs (BIGINT/TEXT/BYTEA-compatible BLOB aside; see doc.go).
var migrations = []string{
	`CREATE TABLE policies (
		name          TEXT PRIMARY KEY,
		primary_key   TEXT NOT NULL,
		secondary_key TEXT NOT NULL,
		rights        TEXT NOT NULL
	);
	CREATE TABLE devices (
		device_id     TEXT PRIMARY KEY,
		generation_id TEXT NOT NULL,
		etag          TEXT NOT NULL,
		status        TEXT NOT NULL,
		status_reason TEXT NOT NULL,
		primary_key   TEXT NOT NULL,
		secondary_key TEXT NOT NULL,
		last_seq      BIGINT NOT NULL,
		updated_at    BIGINT NOT NULL
	);
	CREATE TABLE messages (
		device_id        TEXT NOT NULL,
		seq              BIGINT NOT NULL,
		message_id       TEXT NOT NULL,
		correlation_id   TEXT NOT NULL,
		user_id          TEXT NOT NULL,
		ack              TEXT NOT NULL,
		content_type     TEXT NOT NULL,
		content_encoding TEXT NOT NULL,
		properties       TEXT NOT NULL,
		body             BLOB,
		enqueued_at      BIGINT NOT NULL,
		expires_at       BIGINT NOT NULL,
		explicit_expiry  INTEGER NOT NULL,
		state            TEXT NOT NULL,
		delivery_count   INTEGER NOT NULL,
		lock_token       TEXT,
		locked_until     BIGINT,
		PRIMARY KEY (device_id, seq)
	);
	CREATE UNIQUE INDEX messages_lock_token ON messages (lock_token);
	CREATE INDEX messages_state_lock ON messages (state, locked_until);
	CREATE INDEX messages_state_expiry ON messages (state, expires_at);
	CREATE INDEX messages_message_id ON messages (device_id, message_id);
	CREATE TABLE settled (
		device_id      TEXT NOT NULL,
		seq            BIGINT NOT NULL,
		message_id     TEXT NOT NULL,
		correlation_id TEXT NOT NULL,
		ack            TEXT NOT NULL,
		properties     TEXT NOT NULL,
		enqueued_at    BIGINT NOT NULL,
		expires_at     BIGINT NOT NULL,
		delivery_count INTEGER NOT NULL,
		state          TEXT NOT NULL,
		outcome        TEXT NOT NULL,
		reason         TEXT NOT NULL,
		settled_at     BIGINT NOT NULL,
		PRIMARY KEY (device_id, seq)
	);
	CREATE INDEX settled_message_id ON settled (device_id, message_id);
	CREATE INDEX settled_settled_at ON settled (settled_at);
	CREATE TABLE feedback_records (
		id                  INTEGER PRIMARY KEY,
		batch_id            BIGINT,
		device_id           TEXT NOT NULL,
		original_message_id TEXT NOT NULL,
		generation_id       TEXT NOT NULL,
		enqueued_at         BIGINT NOT NULL,
		status              TEXT NOT NULL,
		description         TEXT NOT NULL,
		reason              TEXT NOT NULL,
		delivery_count      INTEGER NOT NULL,
		correlation_id      TEXT NOT NULL,
		created_at          BIGINT NOT NULL
	);
	CREATE INDEX feedback_records_batch ON feedback_records (batch_id, id);
	CREATE INDEX feedback_records_device ON feedback_records (device_id);
	CREATE TABLE feedback_batches (
		id             BIGINT PRIMARY KEY,
		enqueued_at    BIGINT NOT NULL,
		expires_at     BIGINT NOT NULL,
		delivery_count INTEGER NOT NULL,
		lock_token     TEXT,
		locked_until   BIGINT
	);
	CREATE UNIQUE INDEX feedback_batches_lock_token ON feedback_batches (lock_token);
	CREATE INDEX feedback_batches_locked_until ON feedback_batches (locked_until);
	CREATE INDEX feedback_batches_expires_at ON feedback_batches (expires_at);`,
	// Device twins (store_twin.go): one JSON document per device generation.
	`CREATE TABLE twins (
		device_id     TEXT PRIMARY KEY,
		generation_id TEXT NOT NULL,
		doc           TEXT NOT NULL
	);`,
}

func openSQLite(ctx context.Context, dataDir string, log logger) (*sqliteStore, error) {
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
	if err := migrate(ctx, w); err != nil {
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
	s := &sqliteStore{
		w: w, r: r, log: log, wc: newStmtCache(w), rc: newStmtCache(r),
		reqs:     make(chan *writeReq, 1024),
		stopped:  make(chan struct{}),
		maxBatch: 512,
	}
	go s.writer()
	return s, nil
}

func migrate(ctx context.Context, db *sql.DB) error {
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

func (s *sqliteStore) update(ctx context.Context, fn func(tx storeTx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	r := &writeReq{fn: fn, done: make(chan error, 1)}
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return ErrClosed
	}
	s.reqs <- r
	s.mu.RUnlock()
	// Once submitted, wait for the outcome even if ctx ends: the write may commit, and the
	// caller must not report failure for something that became durable.
	return <-r.done
}

// writer is the only goroutine that writes. It takes whatever requests are waiting (up to
// maxBatch) and commits them in one transaction: one fsync for all of them.
func (s *sqliteStore) writer() {
	defer close(s.stopped)
	batch := make([]*writeReq, 0, s.maxBatch)
	for r := range s.reqs {
		batch = append(batch[:0], r)
	fill:
		for len(batch) < s.maxBatch {
			select {
			case r, ok := <-s.reqs:
				if !ok {
					break fill
				}
				batch = append(batch, r)
			default:
				break fill
			}
		}
		s.commit(batch)
	}
}

func (s *sqliteStore) commit(batch []*writeReq) {
	ctx := context.Background()
	fail := func(err error) {
		for _, r := range batch {
			r.done <- err
		}
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		fail(fmt.Errorf("begin: %w", err))
		return
	}
	errs := make([]error, len(batch))
	t := &sqlTx{ctx: ctx, tx: tx, cache: s.wc}
	for i, r := range batch {
		if len(batch) == 1 {
			errs[i] = r.fn(t)
			if errs[i] != nil {
				tx.Rollback()
				r.done <- errs[i]
				return
			}
			continue
		}
		if _, err := t.exec("SAVEPOINT op"); err != nil {
			tx.Rollback()
			fail(fmt.Errorf("savepoint: %w", err))
			return
		}
		errs[i] = r.fn(t)
		stmts := []string{"RELEASE SAVEPOINT op"}
		if errs[i] != nil {
			stmts = []string{"ROLLBACK TO SAVEPOINT op", "RELEASE SAVEPOINT op"}
		}
		for _, stmt := range stmts {
			if _, err := t.exec(stmt); err != nil {
				tx.Rollback()
				fail(fmt.Errorf("savepoint: %w", err))
				return
			}
		}
	}
	if err := tx.Commit(); err != nil {
		s.log.Error("commit failed", "err", err, "operations", len(batch))
		fail(fmt.Errorf("commit: %w", err))
		return
	}
	s.commits.Add(1)
	for i, r := range batch {
		r.done <- errs[i]
	}
}

func (s *sqliteStore) view(ctx context.Context, fn func(tx storeTx) error) error {
	s.mu.RLock()
	closed := s.closed
	s.mu.RUnlock()
	if closed {
		return ErrClosed
	}
	tx, err := s.r.BeginTx(ctx, nil)
	if err != nil {
		if errors.Is(err, sql.ErrConnDone) {
			return ErrClosed
		}
		return fmt.Errorf("begin read: %w", err)
	}
	defer tx.Rollback()
	return fn(&sqlTx{ctx: ctx, tx: tx, cache: s.rc})
}

func (s *sqliteStore) close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	s.closed = true
	close(s.reqs)
	s.mu.Unlock()
	<-s.stopped
	return errors.Join(s.wc.close(), s.rc.close(), s.r.Close(), s.w.Close())
}

// ---- transactions ----

type sqlTx struct {
	ctx   context.Context
	tx    *sql.Tx
	cache *stmtCache
}

func ms(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromMs(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMilli(v).UTC()
}

// A statement not prepared yet runs unprepared on the transaction's own connection while it is
// prepared in the background: preparing inside the transaction would need a second connection
// from the pool, and with every connection held by a transaction waiting for one, the hub would
// deadlock (a fleet reconnecting at once after a restart did exactly that).
func (t *sqlTx) exec(q string, args ...any) (sql.Result, error) {
	if st := t.cache.get(q); st != nil {
		return t.tx.StmtContext(t.ctx, st).ExecContext(t.ctx, args...)
	}
	return t.tx.ExecContext(t.ctx, q, args...)
}

func (t *sqlTx) query(q string, args ...any) (*sql.Rows, error) {
	if st := t.cache.get(q); st != nil {
		return t.tx.StmtContext(t.ctx, st).QueryContext(t.ctx, args...)
	}
	return t.tx.QueryContext(t.ctx, q, args...)
}

func (t *sqlTx) queryRow(q string, args ...any) *sql.Row {
	if st := t.cache.get(q); st != nil {
		return t.tx.StmtContext(t.ctx, st).QueryRowContext(t.ctx, args...)
	}
	return t.tx.QueryRowContext(t.ctx, q, args...)
}

// stmtCache keeps each statement prepared once per pool: parsing SQL costs more CPU than running
// most of these queries. get never waits for a connection (see sqlTx.exec).
type stmtCache struct {
	db      *sql.DB
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	mu      sync.Mutex
	m       map[string]*sql.Stmt
	pending map[string]bool
	closed  bool
}

func newStmtCache(db *sql.DB) *stmtCache {
	ctx, cancel := context.WithCancel(context.Background())
	return &stmtCache{db: db, ctx: ctx, cancel: cancel, m: map[string]*sql.Stmt{}, pending: map[string]bool{}}
}

// get returns q's prepared statement, or nil after starting to prepare it in the background.
func (c *stmtCache) get(q string) *sql.Stmt {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st := c.m[q]; st != nil || c.closed || c.pending[q] {
		return st
	}
	c.pending[q] = true
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		st, err := c.db.PrepareContext(c.ctx, q)
		c.mu.Lock()
		defer c.mu.Unlock()
		delete(c.pending, q)
		if err != nil {
			return // the unprepared path reports any real error; the next get retries
		}
		if c.closed {
			st.Close()
			return
		}
		c.m[q] = st
	}()
	return nil
}

func (c *stmtCache) close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	c.wg.Wait()
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for _, st := range c.m {
		errs = append(errs, st.Close())
	}
	c.m = nil
	return errors.Join(errs...)
}

func (t *sqlTx) device(id string) (deviceRow, bool, error) {
	var d deviceRow
	var upd int64
	err := t.queryRow(`SELECT device_id, generation_id, etag, status, status_reason,
		primary_key, secondary_key, last_seq, updated_at FROM devices WHERE device_id = ?`, id).
		Scan(&d.ID, &d.GenerationID, &d.ETag, &d.Status, &d.StatusReason, &d.PrimaryKey, &d.SecondaryKey, &d.LastSeq, &upd)
	if errors.Is(err, sql.ErrNoRows) {
		return d, false, nil
	}
	d.UpdatedAt = fromMs(upd)
	return d, err == nil, err
}

func (t *sqlTx) devices() ([]deviceRow, error) {
	rows, err := t.query(`SELECT device_id, generation_id, etag, status, status_reason,
		primary_key, secondary_key, last_seq, updated_at FROM devices ORDER BY device_id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []deviceRow
	for rows.Next() {
		var d deviceRow
		var upd int64
		if err := rows.Scan(&d.ID, &d.GenerationID, &d.ETag, &d.Status, &d.StatusReason, &d.PrimaryKey, &d.SecondaryKey, &d.LastSeq, &upd); err != nil {
			return nil, err
		}
		d.UpdatedAt = fromMs(upd)
		out = append(out, d)
	}
	return out, rows.Err()
}

func (t *sqlTx) insertDevice(d deviceRow) error {
	_, err := t.exec(`INSERT INTO devices (device_id, generation_id, etag, status, status_reason,
		primary_key, secondary_key, last_seq, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		d.ID, d.GenerationID, d.ETag, string(d.Status), d.StatusReason, d.PrimaryKey, d.SecondaryKey, d.LastSeq, ms(d.UpdatedAt))
	return err
}

func (t *sqlTx) updateDevice(d deviceRow) error {
	_, err := t.exec(`UPDATE devices SET generation_id = ?, etag = ?, status = ?, status_reason = ?,
		primary_key = ?, secondary_key = ?, last_seq = ?, updated_at = ? WHERE device_id = ?`,
		d.GenerationID, d.ETag, string(d.Status), d.StatusReason, d.PrimaryKey, d.SecondaryKey, d.LastSeq, ms(d.UpdatedAt), d.ID)
	return err
}

func (t *sqlTx) deleteDevice(id string) error {
	for _, q := range []string{
		`DELETE FROM messages WHERE device_id = ?`,
		`DELETE FROM settled WHERE device_id = ?`,
		`DELETE FROM feedback_records WHERE device_id = ?`,
		`DELETE FROM devices WHERE device_id = ?`,
	} {
		if _, err := t.exec(q, id); err != nil {
			return err
		}
	}
	// Batches that held only this device's records are gone with them.
	_, err := t.exec(`DELETE FROM feedback_batches WHERE NOT EXISTS
		(SELECT 1 FROM feedback_records r WHERE r.batch_id = feedback_batches.id)`)
	return err
}

func (t *sqlTx) policies() ([]Policy, error) {
	rows, err := t.query(`SELECT name, primary_key, secondary_key, rights FROM policies ORDER BY name`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Policy
	for rows.Next() {
		var p Policy
		var rights string
		if err := rows.Scan(&p.Name, &p.PrimaryKey, &p.SecondaryKey, &rights); err != nil {
			return nil, err
		}
		p.Rights = parseRights(rights)
		out = append(out, p)
	}
	return out, rows.Err()
}

func (t *sqlTx) insertPolicy(p Policy) error {
	_, err := t.exec(`INSERT INTO policies (name, primary_key, secondary_key, rights) VALUES (?, ?, ?, ?)`,
		p.Name, p.PrimaryKey, p.SecondaryKey, formatRights(p.Rights))
	return err
}

func (t *sqlTx) sendInfo(deviceID string) (int64, int, bool, error) {
	var seq int64
	var n int
	err := t.queryRow(`SELECT last_seq, (SELECT COUNT(*) FROM messages WHERE device_id = ?)
		FROM devices WHERE device_id = ?`, deviceID, deviceID).Scan(&seq, &n)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, 0, false, nil
	}
	return seq, n, err == nil, err
}

func (t *sqlTx) setLastSeq(deviceID string, seq int64) error {
	_, err := t.exec(`UPDATE devices SET last_seq = ? WHERE device_id = ?`, seq, deviceID)
	return err
}

func (t *sqlTx) pendingCount(deviceID string) (int, error) {
	var n int
	err := t.queryRow(`SELECT COUNT(*) FROM messages WHERE device_id = ?`, deviceID).Scan(&n)
	return n, err
}

func (t *sqlTx) pendingCounts() (map[string]int, error) {
	rows, err := t.query(`SELECT device_id, COUNT(*) FROM messages GROUP BY device_id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var id string
		var n int
		if err := rows.Scan(&id, &n); err != nil {
			return nil, err
		}
		out[id] = n
	}
	return out, rows.Err()
}

func (t *sqlTx) insertMessage(m *msgRow) error {
	props, err := marshalProps(m.Properties)
	if err != nil {
		return err
	}
	explicit := 0
	if m.ExplicitExpiry {
		explicit = 1
	}
	_, err = t.exec(`INSERT INTO messages (device_id, seq, message_id, correlation_id, user_id, ack,
		content_type, content_encoding, properties, body, enqueued_at, expires_at, explicit_expiry,
		state, delivery_count, lock_token, locked_until)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL)`,
		m.DeviceID, m.Seq, m.MessageID, m.CorrelationID, m.UserID, string(m.Ack), m.ContentType,
		m.ContentEncoding, props, m.Body, ms(m.EnqueuedAt), ms(m.ExpiresAt), explicit,
		string(iothub.StateEnqueued), 0)
	return err
}

const msgCols = `device_id, seq, message_id, correlation_id, user_id, ack, content_type,
	content_encoding, properties, body, enqueued_at, expires_at, explicit_expiry, state,
	delivery_count, lock_token, locked_until`

func scanMsgs(rows *sql.Rows) ([]msgRow, error) {
	defer rows.Close()
	var out []msgRow
	for rows.Next() {
		var m msgRow
		var props string
		var enq, exp int64
		var explicit int
		var tok sql.NullString
		var until sql.NullInt64
		if err := rows.Scan(&m.DeviceID, &m.Seq, &m.MessageID, &m.CorrelationID, &m.UserID, &m.Ack,
			&m.ContentType, &m.ContentEncoding, &props, &m.Body, &enq, &exp, &explicit, &m.State,
			&m.DeliveryCount, &tok, &until); err != nil {
			return nil, err
		}
		var err error
		if m.Properties, err = unmarshalProps(props); err != nil {
			return nil, err
		}
		m.EnqueuedAt, m.ExpiresAt, m.ExplicitExpiry = fromMs(enq), fromMs(exp), explicit != 0
		m.LockToken, m.LockedUntil = tok.String, fromMs(until.Int64)
		out = append(out, m)
	}
	return out, rows.Err()
}

func (t *sqlTx) queryMsgs(q string, args ...any) ([]msgRow, error) {
	rows, err := t.query(q, args...)
	if err != nil {
		return nil, err
	}
	return scanMsgs(rows)
}

func (t *sqlTx) enqueued(deviceID string, limit int) ([]msgRow, error) {
	return t.queryMsgs(`SELECT `+msgCols+` FROM messages WHERE device_id = ? AND state = ?
		ORDER BY seq LIMIT ?`, deviceID, string(iothub.StateEnqueued), limit)
}

func (t *sqlTx) pending(deviceID string) ([]msgRow, error) {
	return t.queryMsgs(`SELECT `+msgCols+` FROM messages WHERE device_id = ? ORDER BY seq`, deviceID)
}

func (t *sqlTx) byToken(deviceID, token string) (msgRow, bool, error) {
	ms, err := t.queryMsgs(`SELECT `+msgCols+` FROM messages WHERE lock_token = ? AND device_id = ?`, token, deviceID)
	if err != nil || len(ms) == 0 {
		return msgRow{}, false, err
	}
	return ms[0], true, nil
}

func (t *sqlTx) byMessageID(deviceID, messageID string) (msgRow, bool, error) {
	ms, err := t.queryMsgs(`SELECT `+msgCols+` FROM messages WHERE device_id = ? AND message_id = ?
		ORDER BY seq DESC LIMIT 1`, deviceID, messageID)
	if err != nil {
		return msgRow{}, false, err
	}
	var s msgRow
	var props string
	var enq, exp, at int64
	err = t.queryRow(`SELECT device_id, seq, message_id, correlation_id, ack, properties,
		enqueued_at, expires_at, delivery_count, state, outcome, reason, settled_at FROM settled
		WHERE device_id = ? AND message_id = ? ORDER BY seq DESC LIMIT 1`, deviceID, messageID).
		Scan(&s.DeviceID, &s.Seq, &s.MessageID, &s.CorrelationID, &s.Ack, &props, &enq, &exp,
			&s.DeliveryCount, &s.State, &s.Outcome, &s.Reason, &at)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		if len(ms) == 0 {
			return msgRow{}, false, nil
		}
		return ms[0], true, nil
	case err != nil:
		return msgRow{}, false, err
	}
	if len(ms) > 0 && ms[0].Seq > s.Seq {
		return ms[0], true, nil
	}
	if s.Properties, err = unmarshalProps(props); err != nil {
		return msgRow{}, false, err
	}
	s.EnqueuedAt, s.ExpiresAt, s.SettledAt = fromMs(enq), fromMs(exp), fromMs(at)
	return s, true, nil
}

func (t *sqlTx) setLock(deviceID string, seq int64, token string, until time.Time, deliveryCount int) error {
	_, err := t.exec(`UPDATE messages SET state = ?, lock_token = ?, locked_until = ?, delivery_count = ?
		WHERE device_id = ? AND seq = ?`, string(iothub.StateInvisible), token, ms(until), deliveryCount, deviceID, seq)
	return err
}

func (t *sqlTx) requeue(deviceID string, seq int64) error {
	_, err := t.exec(`UPDATE messages SET state = ?, lock_token = NULL, locked_until = NULL
		WHERE device_id = ? AND seq = ?`, string(iothub.StateEnqueued), deviceID, seq)
	return err
}

func (t *sqlTx) settle(m *msgRow) error {
	props, err := marshalProps(m.Properties)
	if err != nil {
		return err
	}
	if _, err := t.exec(`DELETE FROM messages WHERE device_id = ? AND seq = ?`, m.DeviceID, m.Seq); err != nil {
		return err
	}
	_, err = t.exec(`INSERT INTO settled (device_id, seq, message_id, correlation_id, ack, properties,
		enqueued_at, expires_at, delivery_count, state, outcome, reason, settled_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		m.DeviceID, m.Seq, m.MessageID, m.CorrelationID, string(m.Ack), props, ms(m.EnqueuedAt),
		ms(m.ExpiresAt), m.DeliveryCount, string(m.State), string(m.Outcome), m.Reason, ms(m.SettledAt))
	return err
}

func (t *sqlTx) lockExpired(now time.Time, limit int) ([]msgRow, error) {
	return t.queryMsgs(`SELECT `+msgCols+` FROM messages WHERE state = ? AND locked_until <= ?
		ORDER BY locked_until LIMIT ?`, string(iothub.StateInvisible), ms(now), limit)
}

func (t *sqlTx) ttlExpired(now time.Time, limit int) ([]msgRow, error) {
	return t.queryMsgs(`SELECT `+msgCols+` FROM messages WHERE state = ? AND expires_at <= ?
		ORDER BY expires_at LIMIT ?`, string(iothub.StateEnqueued), ms(now), limit)
}

func (t *sqlTx) invisible() ([]msgRow, error) {
	return t.queryMsgs(`SELECT `+msgCols+` FROM messages WHERE state = ? ORDER BY device_id, seq`,
		string(iothub.StateInvisible))
}

func (t *sqlTx) minTime(q string, args ...any) (time.Time, error) {
	var v sql.NullInt64
	if err := t.queryRow(q, args...).Scan(&v); err != nil {
		return time.Time{}, err
	}
	return fromMs(v.Int64), nil
}

func (t *sqlTx) nextMessageDeadline() (time.Time, error) {
	lock, err := t.minTime(`SELECT MIN(locked_until) FROM messages WHERE state = ?`, string(iothub.StateInvisible))
	if err != nil {
		return time.Time{}, err
	}
	exp, err := t.minTime(`SELECT MIN(expires_at) FROM messages WHERE state = ?`, string(iothub.StateEnqueued))
	if err != nil {
		return time.Time{}, err
	}
	return earliest(lock, exp), nil
}

func (t *sqlTx) pruneSettled(before time.Time) (int64, error) {
	res, err := t.exec(`DELETE FROM settled WHERE settled_at < ?`, ms(before))
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (t *sqlTx) insertRecord(r iothub.FeedbackRecord, createdAt time.Time) error {
	_, err := t.exec(`INSERT INTO feedback_records (batch_id, device_id, original_message_id,
		generation_id, enqueued_at, status, description, reason, delivery_count, correlation_id, created_at)
		VALUES (NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		r.DeviceID, r.OriginalMessageID, r.DeviceGenerationID, ms(r.EnqueuedTimeUTC), string(r.StatusCode),
		r.Description, r.Reason, r.DeliveryCount, r.CorrelationID, ms(createdAt))
	return err
}

func (t *sqlTx) unbatched() (int, time.Time, error) {
	var n int
	var oldest sql.NullInt64
	err := t.queryRow(`SELECT COUNT(*), MIN(created_at) FROM feedback_records WHERE batch_id IS NULL`).
		Scan(&n, &oldest)
	return n, fromMs(oldest.Int64), err
}

func (t *sqlTx) maxBatchID() (int64, error) {
	var v sql.NullInt64
	err := t.queryRow(`SELECT MAX(id) FROM feedback_batches`).Scan(&v)
	return v.Int64, err
}

func (t *sqlTx) formBatch(b batchRow, limit int) (int, error) {
	if _, err := t.exec(`INSERT INTO feedback_batches (id, enqueued_at, expires_at, delivery_count,
		lock_token, locked_until) VALUES (?, ?, ?, 0, NULL, NULL)`, b.ID, ms(b.EnqueuedAt), ms(b.ExpiresAt)); err != nil {
		return 0, err
	}
	res, err := t.exec(`UPDATE feedback_records SET batch_id = ? WHERE id IN
		(SELECT id FROM feedback_records WHERE batch_id IS NULL ORDER BY id LIMIT ?)`, b.ID, limit)
	if err != nil {
		return 0, err
	}
	n, err := res.RowsAffected()
	return int(n), err
}

const batchCols = `id, enqueued_at, expires_at, delivery_count, lock_token, locked_until`

func (t *sqlTx) queryBatches(q string, args ...any) ([]batchRow, error) {
	rows, err := t.query(q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []batchRow
	for rows.Next() {
		var b batchRow
		var enq, exp int64
		var tok sql.NullString
		var until sql.NullInt64
		if err := rows.Scan(&b.ID, &enq, &exp, &b.DeliveryCount, &tok, &until); err != nil {
			return nil, err
		}
		b.EnqueuedAt, b.ExpiresAt, b.LockToken, b.LockedUntil = fromMs(enq), fromMs(exp), tok.String, fromMs(until.Int64)
		out = append(out, b)
	}
	return out, rows.Err()
}

func (t *sqlTx) availableBatch(now time.Time) (batchRow, bool, error) {
	bs, err := t.queryBatches(`SELECT `+batchCols+` FROM feedback_batches
		WHERE lock_token IS NULL AND expires_at > ? ORDER BY id LIMIT 1`, ms(now))
	if err != nil || len(bs) == 0 {
		return batchRow{}, false, err
	}
	return bs[0], true, nil
}

func (t *sqlTx) batchByToken(token string) (batchRow, bool, error) {
	bs, err := t.queryBatches(`SELECT `+batchCols+` FROM feedback_batches WHERE lock_token = ?`, token)
	if err != nil || len(bs) == 0 {
		return batchRow{}, false, err
	}
	return bs[0], true, nil
}

func (t *sqlTx) batchRecords(id int64) ([]iothub.FeedbackRecord, error) {
	rows, err := t.query(`SELECT device_id, original_message_id, generation_id,
		enqueued_at, status, description, reason, delivery_count, correlation_id
		FROM feedback_records WHERE batch_id = ? ORDER BY id`, id)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []iothub.FeedbackRecord{}
	for rows.Next() {
		var r iothub.FeedbackRecord
		var enq int64
		if err := rows.Scan(&r.DeviceID, &r.OriginalMessageID, &r.DeviceGenerationID, &enq, &r.StatusCode,
			&r.Description, &r.Reason, &r.DeliveryCount, &r.CorrelationID); err != nil {
			return nil, err
		}
		r.EnqueuedTimeUTC = fromMs(enq)
		out = append(out, r)
	}
	return out, rows.Err()
}

func (t *sqlTx) lockBatch(id int64, token string, until time.Time, deliveryCount int) error {
	_, err := t.exec(`UPDATE feedback_batches SET lock_token = ?, locked_until = ?, delivery_count = ?
		WHERE id = ?`, token, ms(until), deliveryCount, id)
	return err
}

func (t *sqlTx) unlockBatch(id int64) error {
	_, err := t.exec(`UPDATE feedback_batches SET lock_token = NULL, locked_until = NULL WHERE id = ?`, id)
	return err
}

func (t *sqlTx) deleteBatch(id int64) error {
	if _, err := t.exec(`DELETE FROM feedback_records WHERE batch_id = ?`, id); err != nil {
		return err
	}
	_, err := t.exec(`DELETE FROM feedback_batches WHERE id = ?`, id)
	return err
}

func (t *sqlTx) lockExpiredBatches(now time.Time) ([]batchRow, error) {
	return t.queryBatches(`SELECT `+batchCols+` FROM feedback_batches
		WHERE lock_token IS NOT NULL AND locked_until <= ? ORDER BY id`, ms(now))
}

func (t *sqlTx) expiredBatches(now time.Time) ([]int64, error) {
	bs, err := t.queryBatches(`SELECT `+batchCols+` FROM feedback_batches
		WHERE lock_token IS NULL AND expires_at <= ? ORDER BY id`, ms(now))
	ids := make([]int64, len(bs))
	for i, b := range bs {
		ids[i] = b.ID
	}
	return ids, err
}

func (t *sqlTx) nextBatchDeadline() (time.Time, error) {
	lock, err := t.minTime(`SELECT MIN(locked_until) FROM feedback_batches WHERE lock_token IS NOT NULL`)
	if err != nil {
		return time.Time{}, err
	}
	exp, err := t.minTime(`SELECT MIN(expires_at) FROM feedback_batches WHERE lock_token IS NULL`)
	if err != nil {
		return time.Time{}, err
	}
	return earliest(lock, exp), nil
}

func (t *sqlTx) unlockAllBatches() (int64, error) {
	res, err := t.exec(`UPDATE feedback_batches SET lock_token = NULL, locked_until = NULL WHERE lock_token IS NOT NULL`)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (t *sqlTx) pendingFeedback() (int, error) {
	var n int
	err := t.queryRow(`SELECT COUNT(*) FROM feedback_records`).Scan(&n)
	return n, err
}

// earliest returns the earlier of two times, a zero time meaning "none".
func earliest(a, b time.Time) time.Time {
	switch {
	case a.IsZero():
		return b
	case b.IsZero():
		return a
	case b.Before(a):
		return b
	}
	return a
}

func marshalProps(p []iothub.AppProperty) (string, error) {
	if len(p) == 0 {
		return "[]", nil
	}
	b, err := json.Marshal(p)
	return string(b), err
}

func unmarshalProps(s string) ([]iothub.AppProperty, error) {
	if s == "" || s == "[]" {
		return nil, nil
	}
	var p []iothub.AppProperty
	if err := json.Unmarshal([]byte(s), &p); err != nil {
		return nil, fmt.Errorf("stored properties: %w", err)
	}
	return p, nil
}

func formatRights(rs []Permission) string {
	s := make([]string, len(rs))
	for i, r := range rs {
		s[i] = string(r)
	}
	return strings.Join(s, ",")
}

func parseRights(s string) []Permission {
	var out []Permission
	for _, r := range strings.Split(s, ",") {
		if r != "" {
			out = append(out, Permission(r))
		}
	}
	return out
}
