package hub

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// sqlStore is the store over database/sql, shared by SQLite and PostgreSQL: writer goroutines own
// all writes and group-commit them (concurrent operations share one transaction and one commit;
// savepoints only when a failing operation has writes to undo), and a pool of connections serves
// views. SQLite has one writer; PostgreSQL several, each with its own lane of requests: a
// device's operations always take the same lane (updateFor), so two transactions of one node
// never wait for each other's row locks. The dialect
// holds what differs between the engines; the SQL itself (store_sql_*.go) is written once in the
// subset both run, so the two stores cannot drift.
type sqlStore struct {
	w, r   *sql.DB
	wc, rc *stmtCache // prepared statements of w and r (nil: the driver caches them)
	d      *dialect
	log    logger

	lanes    []chan *writeReq // one per writer; unkeyed updates take lanes[0]
	mu       sync.RWMutex     // held for reading while submitting; Close takes it to stop submissions
	closed   bool
	stopped  chan struct{}
	writers  sync.WaitGroup // the writer goroutines (one for SQLite)
	commits  atomic.Int64   // transactions committed (benchmarks report operations per commit)
	stmts    atomic.Int64   // statements run by updates (benchmarks report statements per command)
	maxBatch int
	onClose  func() error    // extra clean-up after the pools closed (nil: none)
	pgCfg    *pgx.ConnConfig // PostgreSQL: for the LISTEN connection (store_pg.go)
}

type writeReq struct {
	fn       func(tx storeTx) error
	done     chan error
	attempts int // runs that hit a retryable conflict (PostgreSQL deadlock, serialization)
}

// dialect is what one SQL engine does differently.
type dialect struct {
	name string // "sqlite" or "postgres", for error messages
	// numbered: placeholders are $1, $2 … (PostgreSQL); the SQL is written with '?'.
	numbered bool
	// serial: one transaction writes at a time and sees nothing change under it (SQLite), so a
	// read and the write that depends on it may share one statement.
	serial bool
	// forUpdate is appended to a SELECT whose rows the transaction goes on to change, so that
	// concurrent writers of other nodes wait and then see the new version ("" on SQLite, whose
	// single writer needs no row locks). skipLocked does the same for sweeps: a row another node
	// is already handling is left to it, so every timer fires once for the cluster.
	forUpdate, skipLocked string
	// batchLock serialises the forming of feedback batches across nodes (ids are MAX(id)+1).
	batchLock string
	readOpts  *sql.TxOptions
	// writers is how many group-committing writer goroutines run (0: one). PostgreSQL takes
	// several: each statement is a round trip, and one writer waiting for its answers leaves the
	// server idle (see pgWriters).
	writers int
	// opTimeout bounds one group commit (0: none). A database server that stopped answering must
	// fail the requests, not hang them: the node reports itself unhealthy and recovers later.
	opTimeout time.Duration
	retryable func(error) bool
	// unavailable: the error means the server is not there (nil: never); such errors match
	// ErrStoreUnavailable, which the API answers with ServiceUnavailable.
	unavailable func(error) bool
	// serverTime reads the database clock ("" : the local clock is the store's clock).
	serverTime string
	// fused: a command's writes run as single statements (PostgreSQL): data-modifying CTEs and
	// the store's server-side functions, one round trip each (store_sql_hot.go).
	fused bool

	rebound sync.Map // '?' query → numbered query
}

// rebind returns q with numbered placeholders when the dialect uses them.
func (d *dialect) rebind(q string) string {
	if !d.numbered || !strings.Contains(q, "?") {
		return q
	}
	if v, ok := d.rebound.Load(q); ok {
		return v.(string)
	}
	var b strings.Builder
	n := 0
	for _, r := range q {
		if r == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteRune(r)
	}
	d.rebound.Store(q, b.String())
	return b.String()
}

const maxRetries = 5

func newSQLStore(w, r *sql.DB, wc, rc *stmtCache, d *dialect, log logger) *sqlStore {
	s := &sqlStore{
		w: w, r: r, wc: wc, rc: rc, d: d, log: log,
		stopped:  make(chan struct{}),
		maxBatch: 512,
	}
	n := max(1, d.writers)
	s.writers.Add(n)
	for range n {
		lane := make(chan *writeReq, 1024)
		s.lanes = append(s.lanes, lane)
		go s.writer(lane)
	}
	go func() { s.writers.Wait(); close(s.stopped) }()
	return s
}

func (s *sqlStore) update(ctx context.Context, fn func(tx storeTx) error) error {
	return s.submit(ctx, s.lanes[0], fn)
}

// updateFor is update for an operation on one device: every operation on key takes the same
// writer's lane. Concurrent transactions of one node then never hold row locks of the same
// device: they cannot wait for each other there, nor deadlock (which PostgreSQL resolves only
// after deadlock_timeout, a second by default).
func (s *sqlStore) updateFor(ctx context.Context, key string, fn func(tx storeTx) error) error {
	return s.submit(ctx, s.laneFor(key), fn)
}

// laneFor is key's writer lane: always the same one, and keys spread over all of them.
func (s *sqlStore) laneFor(key string) chan *writeReq {
	if len(s.lanes) == 1 {
		return s.lanes[0]
	}
	h := uint32(2166136261) // FNV-1a
	for i := 0; i < len(key); i++ {
		h = (h ^ uint32(key[i])) * 16777619
	}
	return s.lanes[h%uint32(len(s.lanes))]
}

func (s *sqlStore) submit(ctx context.Context, lane chan *writeReq, fn func(tx storeTx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	r := &writeReq{fn: fn, done: make(chan error, 1)}
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return ErrClosed
	}
	lane <- r
	s.mu.RUnlock()
	// Once submitted, wait for the outcome even if ctx ends: the write may commit, and the
	// caller must not report failure for something that became durable.
	return s.classify(<-r.done)
}

// classify marks errors that say the server is gone with ErrStoreUnavailable, and a COMMIT
// whose answer the lost connection took with ErrCommitUnknown as well: the server may have
// made it durable before it went (on SQLite, in the process, a failed commit is a rollback).
func (s *sqlStore) classify(err error) error {
	if err == nil || s.d.unavailable == nil || errors.Is(err, ErrStoreUnavailable) || !s.d.unavailable(err) {
		return err
	}
	var ce *commitError
	if errors.As(err, &ce) {
		return fmt.Errorf("%w: %w: %w", ErrStoreUnavailable, ErrCommitUnknown, err)
	}
	return fmt.Errorf("%w: %w", ErrStoreUnavailable, err)
}

// commitError is a failed COMMIT.
type commitError struct{ err error }

func (e *commitError) Error() string { return "commit: " + e.err.Error() }
func (e *commitError) Unwrap() error { return e.err }

// writer is the only goroutine that writes the requests of its lane. It takes whatever requests
// are waiting (up to maxBatch) and commits them in one transaction: one fsync for all of them.
func (s *sqlStore) writer(lane chan *writeReq) {
	defer s.writers.Done()
	batch := make([]*writeReq, 0, s.maxBatch)
	for r := range lane {
		batch = append(batch[:0], r)
	fill:
		for len(batch) < s.maxBatch {
			select {
			case r, ok := <-lane:
				if !ok {
					break fill
				}
				batch = append(batch, r)
			default:
				break fill
			}
		}
		// A request that lost a conflict with another node runs again in a transaction of its
		// own, after the batch that held it committed.
		for retry := s.commit(batch); len(retry) > 0; {
			retry = s.commit(retry)
		}
	}
}

// commit runs batch in one transaction and answers every request, except those that hit a
// retryable conflict: they are returned to be run again.
//
// A batch first runs without savepoints: most operations either succeed or are refused before
// they write anything (an unknown device, a full queue, a lost lock), and such a refusal leaves
// nothing to undo. Two statements per operation (SAVEPOINT, RELEASE) were a third of the
// statements of a completed command, and on PostgreSQL each is a round trip. Only when an
// operation fails after it wrote, or one of its statements failed (which on PostgreSQL aborts the
// whole transaction), is the batch rolled back and run again with a savepoint per operation, so
// that the failing one undoes only its own writes. Every fn may run more than once (as for a
// retried conflict), and nothing is answered before the transaction that holds it committed.
func (s *sqlStore) commit(batch []*writeReq) (retry []*writeReq) {
	ctx := context.Background()
	if s.d.opTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.d.opTimeout)
		defer cancel()
	}
	if len(batch) == 1 {
		return s.commitOne(ctx, batch[0])
	}
	if retry, ok := s.commitPlain(ctx, batch); ok {
		return retry
	}
	return s.commitSavepoints(ctx, batch)
}

// commitOne runs a batch of one: its own transaction is its savepoint.
func (s *sqlStore) commitOne(ctx context.Context, r *writeReq) (retry []*writeReq) {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		r.done <- fmt.Errorf("%s: begin: %w", s.d.name, err)
		return nil
	}
	t := &sqlTx{ctx: ctx, tx: tx, cache: s.wc, d: s.d, write: true, stmts: &s.stmts}
	if err := r.fn(t); err != nil {
		tx.Rollback()
		if s.canRetry(r, err) {
			return []*writeReq{r}
		}
		r.done <- err
		return nil
	}
	if err := tx.Commit(); err != nil {
		s.log.Error("commit failed", "store", s.d.name, "err", err, "operations", 1)
		r.done <- fmt.Errorf("%s: %w", s.d.name, &commitError{err})
		return nil
	}
	s.commits.Add(1)
	r.done <- nil
	return nil
}

// commitPlain runs batch without savepoints. It reports false, having rolled back and answered
// nothing, when an operation failed in a way that needs its own writes undone.
func (s *sqlStore) commitPlain(ctx context.Context, batch []*writeReq) (retry []*writeReq, ok bool) {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		err = fmt.Errorf("%s: begin: %w", s.d.name, err)
		for _, r := range batch {
			r.done <- err
		}
		return nil, true
	}
	errs := make([]error, len(batch))
	t := &sqlTx{ctx: ctx, tx: tx, cache: s.wc, d: s.d, write: true, stmts: &s.stmts}
	for i, r := range batch {
		t.dirty = false
		if errs[i] = r.fn(t); errs[i] != nil && (t.dirty || !isRefusal(errs[i])) {
			tx.Rollback()
			return nil, false
		}
	}
	if err := tx.Commit(); err != nil {
		s.log.Error("commit failed", "store", s.d.name, "err", err, "operations", len(batch))
		err = fmt.Errorf("%s: %w", s.d.name, &commitError{err})
		for _, r := range batch {
			r.done <- err
		}
		return nil, true
	}
	s.commits.Add(1)
	for i, r := range batch {
		r.done <- errs[i]
	}
	return nil, true
}

// isRefusal: err is the hub's own answer to a request (an *iothub.Error-coded refusal, or
// fencing), decided from what was read, never a statement that failed.
func isRefusal(err error) bool {
	var ce *codedError
	return errors.As(err, &ce) || errors.Is(err, errFenced)
}

// commitSavepoints runs batch with a savepoint around each operation, so a failing one undoes
// only its own writes.
func (s *sqlStore) commitSavepoints(ctx context.Context, batch []*writeReq) (retry []*writeReq) {
	answered := make([]bool, len(batch))
	fail := func(err error) {
		for i, r := range batch {
			if !answered[i] {
				r.done <- err
			}
		}
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		fail(fmt.Errorf("%s: begin: %w", s.d.name, err))
		return nil
	}
	errs := make([]error, len(batch))
	t := &sqlTx{ctx: ctx, tx: tx, cache: s.wc, d: s.d, write: true, stmts: &s.stmts}
	for i, r := range batch {
		if _, err := t.exec("SAVEPOINT op"); err != nil {
			tx.Rollback()
			fail(fmt.Errorf("%s: savepoint: %w", s.d.name, err))
			return nil
		}
		errs[i] = r.fn(t)
		stmts := []string{"RELEASE SAVEPOINT op"}
		if errs[i] != nil {
			stmts = []string{"ROLLBACK TO SAVEPOINT op", "RELEASE SAVEPOINT op"}
		}
		for _, stmt := range stmts {
			if _, err := t.exec(stmt); err != nil {
				tx.Rollback()
				fail(fmt.Errorf("%s: savepoint: %w", s.d.name, err))
				return nil
			}
		}
		if errs[i] != nil && s.canRetry(r, errs[i]) {
			answered[i] = true // answered by the retry
			retry = append(retry, r)
		}
	}
	if err := tx.Commit(); err != nil {
		s.log.Error("commit failed", "store", s.d.name, "err", err, "operations", len(batch))
		fail(fmt.Errorf("%s: %w", s.d.name, &commitError{err}))
		return nil
	}
	s.commits.Add(1)
	for i, r := range batch {
		if !answered[i] {
			r.done <- errs[i]
		}
	}
	return retry
}

func (s *sqlStore) canRetry(r *writeReq, err error) bool {
	if s.d.retryable == nil || !s.d.retryable(err) || r.attempts >= maxRetries {
		return false
	}
	r.attempts++
	return true
}

func (s *sqlStore) view(ctx context.Context, fn func(tx storeTx) error) error {
	s.mu.RLock()
	closed := s.closed
	s.mu.RUnlock()
	if closed {
		return ErrClosed
	}
	tx, err := s.r.BeginTx(ctx, s.d.readOpts)
	if err != nil {
		if errors.Is(err, sql.ErrConnDone) {
			return ErrClosed
		}
		return s.classify(fmt.Errorf("%s: begin read: %w", s.d.name, err))
	}
	defer tx.Rollback()
	return s.classify(fn(&sqlTx{ctx: ctx, tx: tx, cache: s.rc, d: s.d}))
}

func (s *sqlStore) shared() bool { return s.d.name == "postgres" }

// ping checks that the store answers (for /healthz).
func (s *sqlStore) ping(ctx context.Context) error {
	if err := s.w.PingContext(ctx); err != nil {
		return s.classify(fmt.Errorf("%s: %w", s.d.name, err))
	}
	return nil
}

// now is the store's clock: the database server's when the dialect has one.
func (s *sqlStore) now(ctx context.Context) (time.Time, error) {
	if s.d.serverTime == "" {
		return time.Now(), nil
	}
	var v int64
	if err := s.r.QueryRowContext(ctx, s.d.serverTime).Scan(&v); err != nil {
		return time.Time{}, s.classify(fmt.Errorf("%s: read the server clock: %w", s.d.name, err))
	}
	return time.UnixMicro(v), nil
}

func (s *sqlStore) close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	s.closed = true
	for _, lane := range s.lanes {
		close(lane)
	}
	s.mu.Unlock()
	<-s.stopped
	err := errors.Join(s.wc.close(), s.rc.close(), s.r.Close(), s.w.Close())
	if s.onClose != nil {
		err = errors.Join(err, s.onClose())
	}
	return err
}

// ---- transactions ----

type sqlTx struct {
	ctx   context.Context
	tx    *sql.Tx
	cache *stmtCache // nil: the driver caches prepared statements itself (pgx)
	d     *dialect
	write bool // an update's transaction (row locks are taken only there)
	// dirty: since the writer last cleared it, a statement that may have changed data ran, or a
	// statement failed (commitPlain).
	dirty bool
	stmts *atomic.Int64 // counts statements (nil: not counted)
	// handles holds the transaction's handle of each prepared statement it ran: a group commit
	// runs the same few statements for hundreds of requests, and a handle per call (Tx.StmtContext)
	// was ~16 % of the hub's allocated bytes and more work at commit (docs/benchmarks.md).
	handles map[*sql.Stmt]*sql.Stmt
	// seen, when set (the query-plan tests), is told each statement as sent, before it runs.
	seen func(q string, args []any)
}

// stmt returns this transaction's handle of q's prepared statement, nil while it is not prepared.
func (t *sqlTx) stmt(q string) *sql.Stmt {
	st := t.cache.get(q)
	if st == nil {
		return nil
	}
	if ts := t.handles[st]; ts != nil {
		return ts
	}
	ts := t.tx.StmtContext(t.ctx, st)
	if t.handles == nil {
		t.handles = make(map[*sql.Stmt]*sql.Stmt, 8)
	}
	t.handles[st] = ts
	return ts
}

// sent is told of every statement before it runs: it counts it and tells seen.
func (t *sqlTx) sent(q string, args []any) {
	if t.stmts != nil {
		t.stmts.Add(1)
	}
	if t.seen != nil {
		t.seen(q, args)
	}
}

// forUpdate is the row-locking suffix for a SELECT whose rows this write goes on to change.
func (t *sqlTx) forUpdate() string {
	if !t.write {
		return ""
	}
	return t.d.forUpdate
}

// skipLocked is the suffix for a sweep's SELECT: rows another node is changing are its to handle.
func (t *sqlTx) skipLocked() string {
	if !t.write {
		return ""
	}
	return t.d.skipLocked
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
	q = t.d.rebind(q)
	t.sent(q, args)
	t.dirty = true // every exec writes (or takes a lock a savepoint would release)
	if st := t.stmt(q); st != nil {
		return st.ExecContext(t.ctx, args...)
	}
	return t.tx.ExecContext(t.ctx, q, args...)
}

// reads reports whether q only reads (a SELECT); INSERT … RETURNING and the like write.
func reads(q string) bool {
	q = strings.TrimLeft(q, " \t\n")
	return len(q) >= 6 && strings.EqualFold(q[:6], "SELECT")
}

func (t *sqlTx) query(q string, args ...any) (*sql.Rows, error) {
	q = t.d.rebind(q)
	t.sent(q, args)
	if !reads(q) {
		t.dirty = true
	}
	var rows *sql.Rows
	var err error
	if st := t.stmt(q); st != nil {
		rows, err = st.QueryContext(t.ctx, args...)
	} else {
		rows, err = t.tx.QueryContext(t.ctx, q, args...)
	}
	if err != nil {
		t.dirty = true
	}
	return rows, err
}

// sqlRow is *sql.Row that marks its transaction dirty when the statement failed.
type sqlRow struct {
	t *sqlTx
	r *sql.Row
}

func (r sqlRow) Scan(dest ...any) error {
	err := r.r.Scan(dest...)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		r.t.dirty = true
	}
	return err
}

func (t *sqlTx) queryRow(q string, args ...any) sqlRow {
	q = t.d.rebind(q)
	t.sent(q, args)
	if !reads(q) {
		t.dirty = true
	}
	if st := t.stmt(q); st != nil {
		return sqlRow{t, st.QueryRowContext(t.ctx, args...)}
	}
	return sqlRow{t, t.tx.QueryRowContext(t.ctx, q, args...)}
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
	if c == nil {
		return nil
	}
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
	if c == nil {
		return nil
	}
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
