package hub

import (
	"context"
	"log/slog"
	"testing"
)

// The SQL store's statement handling: which statements count as reads, and the prepared
// statement cache.

// reads tells a statement that only reads from one that writes (INSERT … RETURNING goes through
// query too): only SELECT, in any case, after leading white space, is a read.
func TestOnlySelectStatementsCountAsReads(t *testing.T) {
	for q, want := range map[string]bool{
		"SELECT 1":                      true,
		"SELECT":                        true,
		"\n\t  select id FROM messages": true,
		"INSERT INTO t (a) VALUES (1) RETURNING a": false,
		"UPDATE t SET a = 1 RETURNING a":           false,
		"SELEC":                                    false,
		"":                                         false,
	} {
		if got := reads(q); got != want {
			t.Errorf("reads(%q) = %v, want %v", q, got, want)
		}
	}
}

// A statement is prepared once per pool, in the background, then reused: the first get starts
// the preparation and returns nil (its caller runs the statement unprepared), every later get the
// same prepared statement, and a transaction makes one handle of it and reuses that.
func TestStatementsArePreparedOnceAndReused(t *testing.T) {
	st := sqliteStore(t)
	const q = "SELECT 42"
	if p := st.rc.get(q); p != nil {
		t.Fatal("a statement prepared before anyone asked for it")
	}
	st.rc.wg.Wait()
	p := st.rc.get(q)
	if p == nil || st.rc.get(q) != p {
		t.Fatalf("after its preparation: %p, then %p; want one prepared statement", p, st.rc.get(q))
	}
	if err := st.view(ctxT(t), func(tx storeTx) error {
		h1, h2 := tx.(*sqlTx).stmt(q), tx.(*sqlTx).stmt(q)
		if h1 == nil || h1 != h2 {
			t.Errorf("a transaction's handles of it: %p, %p; want one, reused", h1, h2)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// sqliteStore is an SQLite store in a temporary directory, closed when the test ends.
func sqliteStore(t *testing.T) *sqlStore {
	t.Helper()
	st, err := openSQLite(context.Background(), t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.close() })
	return st
}
