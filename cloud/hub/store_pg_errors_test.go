package hub

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"testing"

	"github.com/c2d-project/c2d/internal/pgtest"
	"github.com/jackc/pgx/v5/pgconn"
)

// Which PostgreSQL errors make a node unhealthy (the server is unreachable or not serving: the
// node answers 503 and its watchdog waits) and which refuse one statement only; which are retried.
func TestPostgresErrorClasses(t *testing.T) {
	pg := func(code string) error { return fmt.Errorf("commit: %w", &pgconn.PgError{Code: code}) }
	unavailable := map[string]error{
		"connection exception 08006":      pg("08006"),
		"connection failure 08001":        pg("08001"),
		"admin shutdown 57P01":            pg("57P01"),
		"crash shutdown 57P02":            pg("57P02"),
		"cannot connect now 57P03":        pg("57P03"),
		"too many connections 53300":      pg("53300"),
		"read-only transaction 25006":     pg("25006"),
		"a network error":                 fmt.Errorf("query: %w", &net.OpError{Op: "read", Err: errors.New("connection reset by peer")}),
		"a failed connect":                fmt.Errorf("open: %w", &pgconn.ConnectError{}),
		"a bad connection":                fmt.Errorf("exec: %w", driver.ErrBadConn),
		"EOF":                             fmt.Errorf("read: %w", io.EOF),
		"unexpected EOF":                  fmt.Errorf("read: %w", io.ErrUnexpectedEOF),
		"a statement past its time limit": fmt.Errorf("group commit: %w", context.DeadlineExceeded),
		"a closed connection":             errors.New("conn closed"),
	}
	for what, err := range unavailable {
		if !pgUnavailable(err) {
			t.Errorf("%s (%v): not taken for an unavailable server", what, err)
		}
		if pgRetryable(err) {
			t.Errorf("%s (%v): retried as a conflict", what, err)
		}
	}
	refused := map[string]error{
		"unique violation 23505":      pg("23505"),
		"syntax error 42601":          pg("42601"),
		"query canceled 57014":        pg("57014"),
		"serialization failure 40001": pg("40001"),
		"deadlock 40P01":              pg("40P01"),
		"a plain error":               errors.New("device not found"),
		"a cancelled context":         context.Canceled,
	}
	for what, err := range refused {
		if pgUnavailable(err) {
			t.Errorf("%s (%v): taken for an unavailable server", what, err)
		}
	}
	for _, code := range []string{"40001", "40P01"} {
		if !pgRetryable(pg(code)) {
			t.Errorf("%s: not retried", code)
		}
	}
	for _, err := range []error{pg("23505"), pg("08006"), errors.New("x")} {
		if pgRetryable(err) {
			t.Errorf("%v: retried", err)
		}
	}
}

// Which store settings name a PostgreSQL server: its URLs and libpq's key=value form; not
// "sqlite", a path, or another database's URL (even with parameters).
func TestIsPostgresURL(t *testing.T) {
	for s, want := range map[string]bool{
		"postgres://c2d@db1/c2d":                        true,
		"postgresql://db1:5433/c2d?sslmode=verify-full": true,
		" postgres://c2d@db1/c2d ":                      true,
		"host=db1 dbname=c2d":                           true,
		"sqlite":                                        false,
		"":                                              false,
		"/var/lib/c2d/hub.db":                           false,
		"mysql://c2d@db1/c2d?tls=true":                  false,
	} {
		if got := IsPostgresURL(s); got != want {
			t.Errorf("IsPostgresURL(%q) = %v, want %v", s, got, want)
		}
	}
}

// A connection string in an error message or a log line shows everything but its password.
func TestRedactHidesOnlyThePassword(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://c2d:s3cret@db1/c2d":                            "postgres://c2d:xxxxx@db1/c2d",
		"postgres://:s3cret@db1/c2d":                               "postgres://:xxxxx@db1/c2d",
		"postgres://c2d:p@ss@db1:5433/c2d":                         "postgres://c2d:xxxxx@db1:5433/c2d",
		"postgres://c2d@db1/c2d":                                   "postgres://c2d@db1/c2d",
		"postgresql://c2d@db1/c2d?password=s3cret&sslmode=disable": "postgresql://c2d@db1/c2d?password=xxxxx",
		"host=db1 password=s3cret dbname=c2d":                      "host=db1 password=xxxxx dbname=c2d",
		"host=db1 PASSWORD=s3cret":                                 "host=db1 password=xxxxx",
	} {
		if got := redact(in); got != want {
			t.Errorf("redact(%q) = %q, want %q", in, got, want)
		}
	}
}

// A transaction id the server has not handed out since it last started is "in the future" for
// txid_status: txFuture (a crash took that transaction before anything of it was durable), not
// an error; one that committed is "committed".
func TestTxStatusOfAnIDNotHandedOutIsTheFuture(t *testing.T) {
	st, err := openPostgres(context.Background(), pgtest.DB(t), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	var xid int64
	if err := st.update(context.Background(), func(tx storeTx) error {
		return tx.(*sqlTx).queryRow(`SELECT txid_current()`).Scan(&xid)
	}); err != nil {
		t.Fatal(err)
	}
	// Each in its own transaction: the future one's error aborts the transaction it ran in.
	for x, want := range map[int64]string{xid: "committed", xid + 1<<30: txFuture} {
		if err := st.view(context.Background(), func(tx storeTx) error {
			got, err := tx.(*sqlTx).txStatus(x)
			if err != nil || got != want {
				t.Errorf("txStatus(%d) = %q, %v; want %q", x, got, err, want)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
}
