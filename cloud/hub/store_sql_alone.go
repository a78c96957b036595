package hub

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// A write that is one statement needs no transaction: PostgreSQL runs a statement (a function
// call included) atomically on its own and commits it before it answers. Run inside BEGIN …
// COMMIT it costs three round trips instead of one, and on a 2-core machine shared by the hub and
// the server a round trip is CPU on both sides. A group commit of several writes still shares
// one transaction (one commit for all of them); a write that finds its writer idle, which is
// most of them at moderate load with several writers, runs alone. The send is such a write
// (c2d_enqueue_2, store_pg.go), so it says so (updateOne).

// sqlRunner is what runs a statement: a transaction, or the pool itself (alone).
type sqlRunner interface {
	ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row
}

// errNotOneStatement: a write submitted as one statement (updateOne) ran a second while it ran
// alone. The first has committed already: a programming error the tests must catch, refused
// rather than run outside the transaction it would need.
var errNotOneStatement = errors.New("store: a write submitted as one statement ran a second")

// updateOne is updateFor for a write that runs exactly one statement and returns no error once
// that statement has written (alone, nothing would undo it).
func (s *sqlStore) updateOne(ctx context.Context, key string, fn func(tx storeTx) error) error {
	return s.submitReq(ctx, s.laneFor(key), &writeReq{fn: fn, done: make(chan error, 1), one: true})
}

// aloneStatement counts a statement of a write running alone; the second is refused.
func (t *sqlTx) aloneStatement() error {
	if t.aloneRan {
		return errNotOneStatement
	}
	t.aloneRan = true
	return nil
}

// commitAlone runs a one-statement write by itself: its statement commits on its own.
func (s *sqlStore) commitAlone(ctx context.Context, r *writeReq) (retry []*writeReq) {
	t := &sqlTx{ctx: ctx, cache: s.wc, d: s.d, write: true, stmts: &s.stmts, alone: s.w}
	err := r.fn(t)
	if err != nil && s.canRetry(r, err) {
		return []*writeReq{r}
	}
	if errors.Is(err, errNotOneStatement) {
		s.log.Error("write refused", "store", s.d.name, "err", err)
		err = fmt.Errorf("%s: %w", s.d.name, err)
	}
	if err == nil {
		s.commits.Add(1)
		s.alone.Add(1)
	}
	r.done <- err
	return nil
}
