package hub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/c2d-project/c2d/internal/pgtest"
	"github.com/jackc/pgx/v5/pgconn"
)

// The store's writers on PostgreSQL: their lanes, their connections, their group commit.

// Every writer of a PostgreSQL store runs its transaction at once, and a health check still gets
// an answer while all of them are busy (the pool holds one connection more than the writers).
func TestPostgresWritersAndPingDoNotWaitForEachOther(t *testing.T) {
	st, err := openPostgres(context.Background(), pgtest.DB(t), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	entered, release := make(chan struct{}, len(st.lanes)), make(chan struct{})
	done := make(chan error, len(st.lanes))
	for _, lane := range st.lanes {
		go func() {
			done <- st.submit(context.Background(), lane, func(tx storeTx) error {
				entered <- struct{}{}
				<-release
				return nil
			})
		}()
	}
	for i := range st.lanes {
		select {
		case <-entered:
		case <-time.After(waitLimit):
			close(release)
			t.Fatalf("%d of %d writers got a connection", i, len(st.lanes))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := st.ping(ctx); err != nil {
		t.Errorf("ping while every writer is busy: %v", err)
	}
	close(release)
	for range st.lanes {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

// A device's writes always take the same writer's lane (so one node's transactions never wait on
// each other's row locks of a device), and devices spread over every lane.
func TestDevicesSpreadOverTheWritersLanes(t *testing.T) {
	st, err := openPostgres(context.Background(), pgtest.DB(t), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	used := map[chan *writeReq]int{}
	for i := range 64 {
		id := fmt.Sprintf("pi-%d", i)
		l := st.laneFor(id)
		if st.laneFor(id) != l {
			t.Fatalf("%s took two lanes", id)
		}
		used[l]++
	}
	if len(used) != len(st.lanes) || len(st.lanes) < 2 {
		t.Fatalf("64 devices on %d of %d lanes", len(used), len(st.lanes))
	}
	for _, n := range used {
		if n < 64/len(st.lanes)/2 {
			t.Fatalf("lanes unevenly used: %v", used)
		}
	}
}

// holdLane keeps lane's writer busy with an operation that waits; release(n) waits until n more
// requests queue behind it, then lets it finish (its answer checked), so they form one batch.
func holdLane(t *testing.T, st *sqlStore, lane chan *writeReq) (release func(n int)) {
	t.Helper()
	entered, free := make(chan struct{}), make(chan struct{})
	blocked := make(chan error, 1)
	go func() {
		blocked <- st.submit(context.Background(), lane, func(tx storeTx) error {
			close(entered)
			<-free
			return nil
		})
	}()
	<-entered
	return func(n int) {
		t.Helper()
		ok := queued(lane, n)
		close(free) // even when they did not queue: the held writer must finish either way
		if !ok {
			t.Fatalf("%d of %d requests waiting", len(lane), n)
		}
		if err := <-blocked; err != nil {
			t.Fatal(err)
		}
	}
}

// queued waits until n requests wait in lane; false if they did not within waitLimit.
func queued(lane chan *writeReq, n int) bool {
	for deadline := time.Now().Add(waitLimit); len(lane) < n; runtime.Gosched() {
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}

// Group commit: requests that wait for a busy writer commit together, in transactions of at most
// maxBatch requests (one fsync for each transaction, not for each request).
func TestWaitingRequestsCommitTogetherUpToTheBatchLimit(t *testing.T) {
	st, err := openPostgres(context.Background(), pgtest.DB(t), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	lane := st.lanes[0]
	release := holdLane(t, st, lane)
	n := st.maxBatch + 88
	txids := make([]int64, n)
	done := make(chan error, n)
	for i := range n {
		go func() {
			done <- st.submit(context.Background(), lane, func(tx storeTx) error {
				return tx.(*sqlTx).queryRow(`SELECT txid_current()`).Scan(&txids[i])
			})
		}()
	}
	release(n)
	for range n {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	sizes := map[int64]int{}
	for _, x := range txids {
		sizes[x]++
	}
	var got []int
	for _, c := range sizes {
		got = append(got, c)
	}
	slices.Sort(got)
	if !slices.Equal(got, []int{88, st.maxBatch}) {
		t.Fatalf("%d waiting requests committed in transactions of %v requests; want %d and 88", n, got, st.maxBatch)
	}
}

// An operation that fails with anything but a conflict is answered with its error at once, not
// run again; a conflict (serialization failure, deadlock) is run again, at most maxRetries times.
func TestOnlyConflictsAreRunAgain(t *testing.T) {
	st, err := openPostgres(context.Background(), pgtest.DB(t), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	ctx := context.Background()
	boom := errors.New("boom")
	calls := 0
	if err := st.update(ctx, func(tx storeTx) error { calls++; return boom }); !errors.Is(err, boom) || calls != 1 {
		t.Errorf("a failing operation: %v after %d runs; want boom after 1", err, calls)
	}
	calls = 0
	if err := st.update(ctx, func(tx storeTx) error {
		if calls++; calls < 3 {
			return &pgconn.PgError{Code: "40001"}
		}
		return nil
	}); err != nil || calls != 3 {
		t.Errorf("an operation in conflict twice: %v after %d runs; want success after 3", err, calls)
	}
	calls = 0
	err = st.update(ctx, func(tx storeTx) error { calls++; return &pgconn.PgError{Code: "40P01"} })
	if err == nil || calls != maxRetries+1 {
		t.Errorf("an operation always in conflict: %v after %d runs; want an error after %d", err, calls, maxRetries+1)
	}
}

// groupedStore is a PostgreSQL store with a table "grouped" (name TEXT) for the operations of a
// test's group commits; it is closed when the test ends.
func groupedStore(t *testing.T) *sqlStore {
	t.Helper()
	st, err := openPostgres(context.Background(), pgtest.DB(t), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.close() })
	if err := st.update(context.Background(), func(tx storeTx) error {
		_, err := tx.(*sqlTx).exec(`CREATE TABLE grouped (name TEXT)`)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return st
}

// A conflict in one operation of a group commit undoes only that operation and runs it again: the
// others of its transaction commit once, the one in conflict commits after its retry, and every
// caller is answered with success. (The conflict is the PostgreSQL error an operation's statement
// would return; what a real one looks like is TestOnlyConflictsAreRunAgain's.)
func TestConflictInAGroupCommitIsRunAgainAlone(t *testing.T) {
	st := groupedStore(t)
	ctx := context.Background()
	lane := st.lanes[0]
	release := holdLane(t, st, lane)
	var conflicts int // runs of "b" that met the conflict; only the writer touches it
	op := func(name string) func(tx storeTx) error {
		return func(tx storeTx) error {
			if _, err := tx.(*sqlTx).exec(`INSERT INTO grouped (name) VALUES (?)`, name); err != nil {
				return err
			}
			if name == "b" && conflicts < 2 {
				conflicts++
				return &pgconn.PgError{Code: "40001"}
			}
			return nil
		}
	}
	done := map[string]chan error{}
	for _, name := range []string{"a", "b", "c"} {
		ch := make(chan error, 1)
		done[name] = ch
		go func() { ch <- st.submit(ctx, lane, op(name)) }()
	}
	release(3)
	for name, ch := range done {
		if err := <-ch; err != nil {
			t.Errorf("operation %s: %v; want success", name, err)
		}
	}
	var rows []string
	if err := st.view(ctx, func(tx storeTx) error {
		rs, err := tx.(*sqlTx).query(`SELECT name FROM grouped ORDER BY name`)
		if err != nil {
			return err
		}
		defer rs.Close()
		for rs.Next() {
			var s string
			if err := rs.Scan(&s); err != nil {
				return err
			}
			rows = append(rows, s)
		}
		return rs.Err()
	}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rows, []string{"a", "b", "c"}) || conflicts != 2 {
		t.Fatalf("rows %v after %d conflicts; want each operation's row once, after 2", rows, conflicts)
	}
}

// On PostgreSQL a statement that fails aborts the whole transaction, so an operation that reads a
// failure and answers with a refusal must not leave the group commit going on as if nothing had
// happened: the operations before it in the batch still commit, and the refusal reaches its caller
// as itself, not as the failed commit of everyone's transaction. Both ways of reading: a row
// (queryRow, the failure seen at Scan) and rows (query).
func TestRefusalAfterAFailedStatementLeavesTheGroupCommitWhole(t *testing.T) {
	st := groupedStore(t)
	ctx := context.Background()
	const divide = `SELECT 1 / (SELECT count(*) FROM grouped WHERE name = 'none')`
	reads := map[string]func(tx *sqlTx) error{
		"queryRow": func(tx *sqlTx) error { var n int; return tx.queryRow(divide).Scan(&n) },
		"query": func(tx *sqlTx) error {
			rows, err := tx.query(divide)
			if err == nil {
				rows.Close()
			}
			return err
		},
	}
	want := 0
	for how, read := range reads {
		lane := st.lanes[0]
		release := holdLane(t, st, lane)
		wrote, refused := make(chan error, 1), make(chan error, 1)
		go func() {
			wrote <- st.submit(ctx, lane, func(tx storeTx) error {
				_, err := tx.(*sqlTx).exec(`INSERT INTO grouped (name) VALUES (?)`, how)
				return err
			})
		}()
		if !queued(lane, 1) { // the write first in the batch
			release(0)
			t.Fatal("the first request never queued")
		}
		go func() {
			refused <- st.submit(ctx, lane, func(tx storeTx) error {
				if err := read(tx.(*sqlTx)); err == nil {
					return errors.New("division by zero succeeded")
				}
				return errInvalid("nothing to divide by")
			})
		}()
		release(2)
		if err := <-wrote; err != nil {
			t.Errorf("%s: the write before the refusal: %v; want it committed", how, err)
		}
		if err := <-refused; !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%s: the refusal: %v; want ErrInvalidArgument", how, err)
		}
		want++
		var n int
		if err := st.view(ctx, func(tx storeTx) error {
			return tx.(*sqlTx).queryRow(`SELECT count(*) FROM grouped`).Scan(&n)
		}); err != nil || n != want {
			t.Fatalf("%s: rows after the batch: %d, %v; want %d", how, n, err, want)
		}
	}
}
