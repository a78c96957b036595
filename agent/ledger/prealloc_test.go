package ledger

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// Records go into space the file already has: the file's size, a metadata change every sync
// would have to make durable (a journal commit, a write to a board's SD card), changes once per
// growBy of records, not per record.
func TestRecordsDoNotChangeTheFilesSize(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName)
	l, _ := open(t, path, 10000)
	must(t, l.Start("m0", "f", t0))
	size := fileSize(t, path)
	if size < growBy {
		t.Fatalf("after the first record the file is %d bytes; want it preallocated (≥ %d)", size, growBy)
	}
	changes := 0
	for i := 1; i < 1000; i++ {
		id := fmt.Sprintf("m%d", i)
		must(t, l.Start(id, "f", t0))
		must(t, l.Finish(id, "f", Complete, "", t0))
		if s := fileSize(t, path); s != size {
			changes++
			size = s
		}
	}
	// ≈ 200 bytes a record, 2,000 records: ≈ 400 KiB, so a handful of extensions.
	if changes == 0 || changes > 10 {
		t.Fatalf("the file's size changed %d times over 1,999 records; want a few (one per %d bytes)", changes, growBy)
	}
}

// The zeroed tail is not a torn line: reopening warns about nothing, keeps every record, and the
// next record goes after the last one, not after the zeros.
func TestPreallocatedTailReopensClean(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName)
	l, _ := open(t, path, 100)
	must(t, l.Finish("a", "fa", Complete, "", t0))
	must(t, l.Close())
	for round, id := range []string{"b", "c"} {
		l2, logs := open(t, path, 100)
		if logs.Len() != 0 {
			t.Fatalf("reopen %d warned: %s", round, logs)
		}
		must(t, l2.Finish(id, "f"+id, Reject, "no", t0))
		must(t, l2.Close())
	}
	l3, logs := open(t, path, 100)
	if logs.Len() != 0 {
		t.Fatalf("final reopen warned: %s", logs)
	}
	for _, id := range []string{"a", "b", "c"} {
		if e, ok := l3.Lookup(id); !ok || !e.Done {
			t.Errorf("%s = %+v, %v after reopening", id, e, ok)
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Count(strings.TrimRight(string(data), "\x00"), "\n"); lines != 3 {
		t.Errorf("%d lines before the zeroed tail, want 3 (records written after the zeros?)", lines)
	}
}

// Power loss while a record was being written into the preallocated space leaves part of it
// before the zeros: that record is dropped with a warning, the others kept, and the file is
// rewritten clean.
func TestTornRecordBeforeTheZeros(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName)
	l, _ := open(t, path, 100)
	must(t, l.Finish("a", "fa", Complete, "", t0))
	end := l.end
	must(t, l.Close())
	line, _ := encode(record{Op: "done", ID: "b", Fingerprint: "fb", Outcome: Complete, Time: t0})
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(line[:len(line)/2], end); err != nil {
		t.Fatal(err)
	}
	f.Close()
	l2, logs := open(t, path, 100)
	if !strings.Contains(logs.String(), "torn (no newline)") {
		t.Errorf("no warning about the torn record: %q", logs)
	}
	if _, ok := l2.Lookup("b"); ok {
		t.Error("the torn record b was kept")
	}
	if e, ok := l2.Lookup("a"); !ok || !e.Done {
		t.Errorf("a = %+v, %v: the intact record must stay", e, ok)
	}
	must(t, l2.Close())
	if _, logs := open(t, path, 100); logs.Len() != 0 {
		t.Errorf("still damaged after the rewrite: %s", logs)
	}
}
