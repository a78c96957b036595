package ledger

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func lines(t *testing.T, path string) int {
	t.Helper()
	data, err := os.ReadFile(path)
	must(t, err)
	return strings.Count(string(data), "\n")
}

// MaxIDs 0 means the default, not "remember nothing".
func TestZeroMaxIDsMeansDefault(t *testing.T) {
	l, _ := open(t, filepath.Join(t.TempDir(), FileName), 0)
	for i := range 50 {
		must(t, l.Start(fmt.Sprint("m", i), "f", t0))
	}
	if l.Len() != 50 {
		t.Fatalf("Len %d with MaxIDs 0, want all 50 remembered (default 10000)", l.Len())
	}
}

// At open, a file holding more than 2 × MaxIDs records is compacted to one per remembered id; one
// holding exactly 2 × MaxIDs is left as it is.
func TestOpenCompactsOnlyPastTwiceMaxIDs(t *testing.T) {
	for _, tc := range []struct {
		records, want int
	}{{6, 6}, {7, 3}, {2, 2}} {
		path := filepath.Join(t.TempDir(), FileName)
		var data []byte
		for i := range tc.records {
			line, err := encode(record{Op: "start", ID: fmt.Sprint("m", i), Fingerprint: "f", Time: t0})
			must(t, err)
			data = append(data, line...)
		}
		must(t, os.WriteFile(path, data, 0o640))
		l, logs := open(t, path, 3)
		if got := lines(t, path); got != tc.want {
			t.Errorf("%d records, MaxIDs 3: %d lines after open, want %d", tc.records, got, tc.want)
		}
		if logs.Len() != 0 {
			t.Errorf("warnings: %s", logs)
		}
		l.Close()
	}
}

// While running, the file never grows past 2 × MaxIDs + 100 records, compacts exactly when it
// would, logs no failure when compaction works, and keeps no file descriptor per compaction.
func TestRunningCompactionBoundsFileExactly(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName)
	l, logs := open(t, path, 1)
	fds := func() int {
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Skip("no /proc/self/fd")
		}
		return len(ents)
	}
	before := fds()
	compactions := 0
	for i := range 600 {
		must(t, l.Start("m", "f", t0))
		n := lines(t, path)
		if n > 2*1+100 {
			t.Fatalf("after %d writes the file has %d lines, more than 2 × MaxIDs + 100", i+1, n)
		}
		if i == 101 && n != 102 {
			t.Fatalf("after 102 writes (at the limit): %d lines, want 102 (no compaction yet)", n)
		}
		if n == 1 {
			compactions++
		}
	}
	if compactions < 5 {
		t.Fatalf("%d compactions in 600 writes, want one every 102", compactions)
	}
	if logs.Len() != 0 {
		t.Errorf("warnings: %s", logs)
	}
	if after := fds(); after > before+1 {
		t.Errorf("%d file descriptors before, %d after %d compactions", before, after, compactions)
	}
}

// An empty line (a zeroed block after a crash, an editor) is dropped with a warning; the records
// after it still load.
func TestEmptyLineDoesNotHideLaterRecords(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName)
	a, _ := encode(record{Op: "done", ID: "a", Fingerprint: "f", Outcome: Complete, Time: t0})
	b, _ := encode(record{Op: "done", ID: "b", Fingerprint: "f", Outcome: Reject, Reason: "r", Time: t0})
	must(t, os.WriteFile(path, append(append(append([]byte{}, a...), '\n'), b...), 0o640))
	l, logs := open(t, path, 100)
	if _, ok := l.Lookup("b"); !ok {
		t.Fatal("the record after an empty line was lost")
	}
	if _, ok := l.Lookup("a"); !ok {
		t.Fatal("a lost")
	}
	if !strings.Contains(logs.String(), "line 2") {
		t.Errorf("no warning about line 2: %s", logs)
	}
}
