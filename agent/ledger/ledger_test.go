package ledger

import (
	"bytes"
	"container/list"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 25, 22, 0, 0, 0, time.UTC)

func open(t *testing.T, path string, max int) (*Ledger, *bytes.Buffer) {
	t.Helper()
	var logs bytes.Buffer
	l, err := Open(path, Options{MaxIDs: max, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, &logs
}

func TestSurvivesRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state", FileName)
	l, _ := open(t, path, 100)
	must(t, l.Start("a", "fa", t0))
	must(t, l.Finish("a", "fa", Complete, "", t0.Add(time.Second)))
	must(t, l.Start("b", "fb", t0))
	must(t, l.Finish("c", "fc", Reject, `unknown target "x"`, t0))
	must(t, l.Start("d", "fd", t0))
	must(t, l.Forget("d", t0))
	l.Close()

	l2, logs := open(t, path, 100)
	if logs.Len() != 0 {
		t.Errorf("warnings on a clean file: %s", logs)
	}
	if e, ok := l2.Lookup("a"); !ok || !e.Done || e.Outcome != Complete || e.Fingerprint != "fa" || !e.Started.Equal(t0) {
		t.Errorf("a = %+v %v", e, ok)
	}
	if e, ok := l2.Lookup("b"); !ok || e.Done || !e.Started.Equal(t0) {
		t.Errorf("b (started, unfinished) = %+v %v", e, ok)
	}
	if e, ok := l2.Lookup("c"); !ok || !e.Done || e.Outcome != Reject || e.Reason != `unknown target "x"` {
		t.Errorf("c = %+v %v", e, ok)
	}
	if _, ok := l2.Lookup("d"); ok {
		t.Error("forgotten id d remembered")
	}
	if l2.Len() != 3 {
		t.Errorf("Len = %d", l2.Len())
	}
}

func TestReusedIDStartsFresh(t *testing.T) {
	l, _ := open(t, filepath.Join(t.TempDir(), FileName), 100)
	must(t, l.Start("a", "f1", t0))
	must(t, l.Finish("a", "f1", Reject, "no", t0))
	must(t, l.Start("a", "f2", t0.Add(time.Minute)))
	e, _ := l.Lookup("a")
	if e.Done || e.Fingerprint != "f2" {
		t.Errorf("after restart of reused id: %+v", e)
	}
}

func TestTornTailTolerated(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName)
	l, _ := open(t, path, 100)
	must(t, l.Finish("a", "fa", Complete, "", t0))
	must(t, l.Start("b", "fb", t0))
	l.Close()
	data, _ := os.ReadFile(path)
	// Power loss mid-append: half a record, no newline.
	line, _ := encode(record{Op: "done", ID: "b", Fingerprint: "fb", Outcome: Complete, Time: t0})
	torn := append(append([]byte{}, data...), line[:len(line)/2]...)
	must(t, os.WriteFile(path, torn, 0o640))

	l2, logs := open(t, path, 100)
	if !strings.Contains(logs.String(), "torn (no newline)") {
		t.Errorf("no warning about the torn tail: %q", logs)
	}
	if e, ok := l2.Lookup("b"); !ok || e.Done {
		t.Errorf("b = %+v: the torn done record must be dropped, the start kept", e)
	}
	// Appending after recovery yields a clean file.
	must(t, l2.Finish("b", "fb", Reject, "interrupted", t0))
	l2.Close()
	l3, logs3 := open(t, path, 100)
	if logs3.Len() != 0 {
		t.Errorf("file still damaged after recovery: %s", logs3)
	}
	if e, _ := l3.Lookup("b"); !e.Done || e.Reason != "interrupted" {
		t.Errorf("b = %+v", e)
	}
}

func TestCorruptLineSkipped(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName)
	l, _ := open(t, path, 100)
	must(t, l.Finish("a", "fa", Complete, "", t0))
	must(t, l.Finish("b", "fb", Complete, "", t0))
	must(t, l.Finish("c", "fc", Complete, "", t0))
	l.Close()
	data, _ := os.ReadFile(path)
	lines := bytes.SplitAfter(data, []byte("\n"))
	lines[1] = bytes.Replace(lines[1], []byte(`"b"`), []byte(`"B"`), 1) // bit rot: checksum no longer matches
	must(t, os.WriteFile(path, bytes.Join(lines, nil), 0o640))
	l2, logs := open(t, path, 100)
	if !strings.Contains(logs.String(), "line 2: checksum mismatch") {
		t.Errorf("warning = %q", logs)
	}
	_, okA := l2.Lookup("a")
	_, okB := l2.Lookup("b")
	_, okBB := l2.Lookup("B")
	_, okC := l2.Lookup("c")
	if !okA || okB || okBB || !okC {
		t.Errorf("a %v b %v B %v c %v: want only the corrupt line dropped", okA, okB, okBB, okC)
	}
}

func TestBoundAndCompaction(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName)
	const max = 100
	l, _ := open(t, path, max)
	for i := 0; i < 1000; i++ {
		id := fmt.Sprintf("m%04d", i)
		must(t, l.Start(id, "f", t0))
		must(t, l.Finish(id, "f", Complete, "", t0))
	}
	if l.Len() != max {
		t.Errorf("Len = %d, want %d", l.Len(), max)
	}
	if _, ok := l.Lookup("m0899"); ok {
		t.Error("m0899 should have been evicted")
	}
	if _, ok := l.Lookup("m0900"); !ok {
		t.Error("m0900 (among the newest 100) forgotten")
	}
	l.Close()
	data, _ := os.ReadFile(path)
	if n := bytes.Count(data, []byte("\n")); n > 2*max+100+1 {
		t.Errorf("file has %d lines: compaction did not bound it", n)
	}
	l2, logs := open(t, path, max)
	if logs.Len() != 0 || l2.Len() != max {
		t.Errorf("after reopen: Len %d, warnings %q", l2.Len(), logs)
	}
	if e, ok := l2.Lookup("m0999"); !ok || !e.Done || !e.Started.Equal(t0) {
		t.Errorf("m0999 after compaction = %+v", e)
	}
	if _, err := os.Stat(path + ".tmp"); !os.IsNotExist(err) {
		t.Errorf("compaction left its temp file: %v", err)
	}
}

func TestClosed(t *testing.T) {
	l, _ := open(t, filepath.Join(t.TempDir(), FileName), 100)
	l.Close()
	if err := l.Start("a", "f", t0); err == nil {
		t.Fatal("Start on a closed ledger succeeded")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// FuzzParse: any file content loads without panicking, and every record parse accepts survives a
// round trip through encode.
func FuzzParse(f *testing.F) {
	good, _ := encode(record{Op: "done", ID: "m1", Fingerprint: "ab", Outcome: Reject, Reason: "no", Time: t0})
	start, _ := encode(record{Op: "start", ID: "m2", Time: t0})
	f.Add(append(append([]byte{}, good...), start...))
	f.Add(good[:len(good)-3])
	f.Add([]byte("00000000 {}\n"))
	f.Add([]byte("\n\n\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		recs, _ := parse(data)
		for _, r := range recs {
			line, err := encode(r)
			if err != nil {
				t.Fatal(err)
			}
			back, problems := parse(line)
			if len(problems) != 0 || len(back) != 1 || back[0].ID != r.ID || back[0].Op != r.Op || back[0].Outcome != r.Outcome || back[0].Reason != r.Reason {
				t.Fatalf("round trip of %+v: %+v %v", r, back, problems)
			}
		}
		l := &Ledger{max: 3}
		l.entries, l.order = map[string]*list.Element{}, list.New()
		for _, r := range recs {
			l.apply(r)
		}
		if len(l.entries) > 3 {
			t.Fatalf("bound exceeded: %d", len(l.entries))
		}
	})
}

// A done record written but not yet fsynced is in the file: a process killed before Sync (the
// kernel keeps what was written) finds it on reopen, and Sync afterwards succeeds.
func TestFinishWrittenIsReadBackBeforeSync(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName)
	l, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	if err := l.Start("m1", "fp", now); err != nil {
		t.Fatal(err)
	}
	if err := l.FinishWritten("m1", "fp", Reject, "bad pin", now.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if e, ok := l.Lookup("m1"); !ok || !e.Done || e.Outcome != Reject || e.Reason != "bad pin" {
		t.Fatalf("in memory: %+v, %v", e, ok)
	}
	// Another reader of the file (what a restarted agent sees after a kill -9).
	l2, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	if e, ok := l2.Lookup("m1"); !ok || !e.Done || e.Outcome != Reject || e.Reason != "bad pin" || !e.Started.Equal(now) {
		t.Fatalf("reopened: %+v, %v", e, ok)
	}
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Sync(); err == nil {
		t.Fatal("Sync after Close succeeded")
	}
}
