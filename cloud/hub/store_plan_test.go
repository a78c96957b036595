package hub

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// The statements a command and the timers run against the messages table are served by an index
// on both stores: a settle by the primary key (the lock token's sequence number), the lock and
// TTL sweeps and the next deadline by messages_due, each without a full scan or a sort of what
// it reads. A fleet's queues hold millions of rows; a statement that scans them works in this
// suite's tiny tables and takes the hub down in the field, so the plans are what is checked.
// PostgreSQL's planner prefers a scan of a table this small and picks among indexes by statistics
// it does not have here, so its check runs with enable_seqscan off and asserts only that an index
// serves the statement without a sort; SQLite's plans are checked index and bounds.
func TestStoreMessageStatementsUseAnIndex(t *testing.T) {
	eachStore(t, func(t *testing.T, st store, _ func() store) {
		epoch := claimedWithMessages(t, st, 3)
		// sqlite: what SQLite's plans must show between them (its planner needs no statistics, so
		// its plan is the one a large table gets): the index and the columns that bound its range.
		pk := "sqlite_autoindex_messages_1 (device_id=? AND seq=?)"
		checks := []struct {
			name   string
			run    func(tx storeTx) error
			sqlite []string
		}{
			{"lockExpired", func(tx storeTx) error { _, err := tx.lockExpired(at(time.Hour), 10); return err },
				[]string{"messages_due (state=? AND locked_until<?)"}},
			{"ttlExpired", func(tx storeTx) error { _, err := tx.ttlExpired(at(time.Hour), 10); return err },
				[]string{"messages_due (state=? AND locked_until=? AND expires_at<?)"}},
			{"nextMessageDeadline", func(tx storeTx) error { _, err := tx.nextMessageDeadline(); return err },
				[]string{"messages_due (state=?)", "messages_due (state=? AND locked_until=?)"}},
			{"byToken", func(tx storeTx) error { _, _, err := tx.byToken("d", testToken("p", 1)); return err },
				[]string{pk}},
			{"takeLocked", func(tx storeTx) error { _, _, err := tx.takeLocked("d", testToken("p", 1), at(0)); return err },
				[]string{pk}},
			{"settleLocked", func(tx storeTx) error {
				_, _, err := tx.settleLocked("d", testToken("p", 1), at(0), owner{node: "n1", epoch: epoch}, iothub.StatusSuccess, "")
				return err
			}, []string{pk}},
		}
		for _, c := range checks {
			up(t, st, func(tx storeTx) error {
				s := sqlOf(tx)
				type stmt struct {
					q    string
					args []any
				}
				var ran []stmt
				s.seen = func(q string, args []any) { ran = append(ran, stmt{q, args}) }
				err := c.run(tx)
				s.seen = nil
				if err != nil {
					return fmt.Errorf("%s: %w", c.name, err)
				}
				var onMessages int
				var plans []string
				for _, r := range ran {
					if !strings.Contains(r.q, "messages") {
						continue
					}
					onMessages++
					plan, err := explain(s, r.q, r.args)
					if err != nil {
						return fmt.Errorf("%s: explain %s: %w", c.name, r.q, err)
					}
					plans = append(plans, plan)
					if bad := fullScanOrSort(s.d.name, plan); bad != "" {
						t.Errorf("%s: %q reads the messages table without an index (%s); plan:\n%s", c.name, r.q, bad, plan)
					}
				}
				if onMessages == 0 {
					t.Errorf("%s ran no statement on the messages table: %q", c.name, ran)
				}
				if s.d.name == "sqlite" {
					all := strings.Join(plans, "\n")
					for _, w := range c.sqlite {
						if !strings.Contains(all, w) {
							t.Errorf("%s: no step of its plans uses %s; plans:\n%s", c.name, w, all)
						}
					}
				}
				return nil
			})
		}
	})
}

// explain returns the store's plan for q, one line per step.
func explain(s *sqlTx, q string, args []any) (string, error) {
	prefix := "EXPLAIN QUERY PLAN "
	if s.d.name == "postgres" {
		if _, err := s.tx.ExecContext(s.ctx, "SET LOCAL enable_seqscan = off"); err != nil {
			return "", err
		}
		prefix = "EXPLAIN "
	}
	rows, err := s.tx.QueryContext(s.ctx, prefix+q, args...)
	if err != nil {
		return "", err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return "", err
	}
	var lines []string
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return "", err
		}
		lines = append(lines, fmt.Sprint(vals[len(vals)-1])) // SQLite's detail, PostgreSQL's line
	}
	return strings.Join(lines, "\n"), rows.Err()
}

// fullScanOrSort names what in plan reads messages without an index's order or bounds: "" when
// nothing does.
func fullScanOrSort(dialect, plan string) string {
	for _, l := range strings.Split(plan, "\n") {
		l = strings.TrimSpace(strings.TrimLeft(strings.TrimSpace(l), "->"))
		switch {
		case dialect != "postgres" && strings.HasPrefix(l, "SCAN messages"):
			return l
		case dialect != "postgres" && strings.Contains(l, "TEMP B-TREE"):
			return l
		case dialect == "postgres" && strings.HasPrefix(l, "Seq Scan on messages"):
			return l
		case dialect == "postgres" && strings.HasPrefix(l, "Sort"):
			return l
		}
	}
	return ""
}
