package ledger

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// ids lists the remembered ids, oldest (next to evict) first.
func ids(l *Ledger) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for el := l.order.Front(); el != nil; el = el.Next() {
		out = append(out, el.Value.(*Entry).ID)
	}
	return out
}

// A done record for other content than the id's open entry is that other message's outcome: it
// takes nothing (start time, fingerprint) from the entry it replaces.
func TestDoneWithOtherFingerprintDoesNotMergeIntoOldEntry(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName)
	l, _ := open(t, path, 100)
	must(t, l.Start("a", "f1", t0))
	must(t, l.Finish("a", "f2", Reject, "other content", t0.Add(time.Minute)))
	check := func(when string, l *Ledger) {
		t.Helper()
		e, ok := l.Lookup("a")
		if !ok || e.Fingerprint != "f2" || !e.Done || e.Outcome != Reject || !e.Started.IsZero() || !e.Finished.Equal(t0.Add(time.Minute)) {
			t.Fatalf("%s: a = %+v, %v; want f2's own outcome with no start time of f1's", when, e, ok)
		}
	}
	check("live", l)
	l.Close()
	l2, _ := open(t, path, 100)
	check("after reopen", l2)
	// A done for the same content keeps its start.
	must(t, l2.Start("b", "fb", t0))
	must(t, l2.Finish("b", "fb", Complete, "", t0.Add(time.Second)))
	if e, _ := l2.Lookup("b"); !e.Started.Equal(t0) || e.Fingerprint != "fb" {
		t.Fatalf("b = %+v: the done of the same content lost its start", e)
	}
}

// A forgotten id stays forgotten across compaction and reopen: its redelivery runs again.
func TestForgottenIDStaysForgottenAfterCompactionAndReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName)
	const max = 3
	l, _ := open(t, path, max)
	must(t, l.Start("gone", "f", t0))
	must(t, l.Forget("gone", t0))
	must(t, l.Finish("kept", "f", Complete, "", t0))
	// Enough records on two other ids to pass the compaction threshold (2*max+100 lines).
	for i := 0; i <= 2*max+100; i++ {
		must(t, l.Start(fmt.Sprint("x", i%2), "f", t0))
	}
	data, err := os.ReadFile(path)
	must(t, err)
	if n := strings.Count(string(data), "\n"); n > 2*max+100 {
		t.Fatalf("no compaction: %d lines", n)
	}
	if strings.Contains(string(data), `"gone"`) {
		t.Fatalf("compaction kept a forgotten id:\n%s", data)
	}
	l.Close()
	l2, _ := open(t, path, max)
	if e, ok := l2.Lookup("gone"); ok {
		t.Fatalf("forgotten id back after compaction and reopen: %+v", e)
	}
	if e, ok := l2.Lookup("kept"); !ok || !e.Done {
		t.Fatalf("kept = %+v, %v", e, ok)
	}
}

// Eviction order survives a restart, both by replay and after compaction: the least recently
// written id goes first, and a rewrite of an old id makes it recent.
func TestLRUOrderSurvivesRestart(t *testing.T) {
	for _, compact := range []bool{false, true} {
		t.Run(fmt.Sprint("compacted=", compact), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), FileName)
			l, _ := open(t, path, 3)
			for _, id := range []string{"a", "b", "c"} {
				must(t, l.Start(id, "f", t0))
			}
			must(t, l.Finish("a", "f", Complete, "", t0)) // a done: more recent than b and c
			must(t, l.Start("b", "f2", t0))               // b reused with new content: the most recent
			if compact {
				l.mu.Lock()
				err := l.compactLocked()
				l.mu.Unlock()
				must(t, err)
			}
			l.Close()
			l2, _ := open(t, path, 3)
			if got := strings.Join(ids(l2), ","); got != "c,a,b" {
				t.Fatalf("order after reopen %s, want c,a,b", got)
			}
			must(t, l2.Start("d", "f", t0))
			if _, ok := l2.Lookup("c"); ok {
				t.Error("c, the least recently written, was not evicted")
			}
			for _, id := range []string{"a", "b", "d"} {
				if _, ok := l2.Lookup(id); !ok {
					t.Errorf("%s evicted instead of c", id)
				}
			}
		})
	}
}

// A done record must name an outcome the agent can answer a redelivery with; one that does not
// (a file from a future version, a bug) is dropped with a warning, and the start before it stands.
func TestDoneRecordWithUnknownOutcomeIsDropped(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName)
	var data []byte
	for _, r := range []record{
		{Op: "start", ID: "a", Fingerprint: "f", Time: t0},
		{Op: "done", ID: "a", Fingerprint: "f", Outcome: "abandon", Time: t0},
		{Op: "done", ID: "b", Fingerprint: "f", Time: t0},
		{Op: "done", ID: "c", Fingerprint: "f", Outcome: Complete, Time: t0},
		{Op: "done", ID: "d", Fingerprint: "f", Outcome: Reject, Reason: "r", Time: t0},
		{Op: "finish", ID: "e", Fingerprint: "f", Outcome: Complete, Time: t0},
		{Op: "start", ID: "", Fingerprint: "f", Time: t0},
	} {
		line, err := encode(r)
		must(t, err)
		data = append(data, line...)
	}
	must(t, os.WriteFile(path, data, 0o640))
	l, logs := open(t, path, 100)
	for _, want := range []string{`line 2: unknown outcome \"abandon\"`, `line 3: unknown outcome \"\"`, `line 6: unknown op \"finish\"`, "line 7: record without id"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("no warning %s in %s", want, logs)
		}
	}
	if e, ok := l.Lookup("a"); !ok || e.Done {
		t.Errorf("a = %+v, %v: want started, not done", e, ok)
	}
	if _, ok := l.Lookup("b"); ok {
		t.Error("b, done without an outcome, remembered")
	}
	if _, ok := l.Lookup("e"); ok {
		t.Error("e, of an unknown op, remembered")
	}
	if e, ok := l.Lookup("c"); !ok || e.Outcome != Complete {
		t.Errorf("c = %+v, %v", e, ok)
	}
	if e, ok := l.Lookup("d"); !ok || e.Outcome != Reject || e.Reason != "r" {
		t.Errorf("d = %+v, %v", e, ok)
	}
	if l.Len() != 3 {
		t.Errorf("Len %d, want 3 (a, c, d)", l.Len())
	}
}
