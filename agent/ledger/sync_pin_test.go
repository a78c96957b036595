package ledger

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// An fsync on a board wears its SD card: a SyncSoon with nothing written since the last fsync
// began makes none, and the syncer stays for the next record.
func TestSyncSoonWithNothingNewMakesNoFsync(t *testing.T) {
	l, logs := open(t, filepath.Join(t.TempDir(), FileName), 100)
	c := &fsyncs{entered: make(chan struct{}, 16), gate: make(chan struct{})}
	c.install(l)
	must(t, l.FinishWritten("m0", "fp", Complete, "", t0))
	l.SyncSoon()
	c.waitEntered(t, "SyncSoon did not fsync")
	// The first fsync is held: m0's line is covered by it, nothing else is written.
	l.SyncSoon()
	close(c.gate)
	// Wait until the syncer has taken the second request (it then either fsyncs or not before it
	// looks at its channels again, so Close cannot overtake it).
	for deadline := time.Now().Add(10 * time.Second); len(l.syncKick) > 0; runtime.Gosched() {
		if time.Now().After(deadline) {
			t.Fatal("the syncer never took the second request")
		}
	}
	// The syncer is still there for the next record.
	must(t, l.FinishWritten("m1", "fp", Complete, "", t0))
	l.SyncSoon()
	c.waitEntered(t, "SyncSoon after one with nothing new did not fsync")
	must(t, l.Close())
	if n := c.count(); n != 2 {
		t.Fatalf("%d fsyncs for two done records and a SyncSoon with nothing new between them; want 2", n)
	}
	if logs.Len() != 0 {
		t.Errorf("a successful background fsync logged: %s", logs)
	}
}

// A successful background fsync is not reported as a failure, and leaves nothing for Close to do.
func TestBackgroundFsyncSuccessLogsNothing(t *testing.T) {
	l, logs := open(t, filepath.Join(t.TempDir(), FileName), 100)
	c := &fsyncs{entered: make(chan struct{}, 16)}
	c.install(l)
	must(t, l.FinishWritten("m0", "fp", Complete, "", t0))
	l.SyncSoon()
	c.waitEntered(t, "SyncSoon did not fsync")
	must(t, l.Close()) // waits for the syncer to finish what it began
	if logs.Len() != 0 {
		t.Errorf("a successful background fsync logged: %s", logs)
	}
	if n := c.count(); n != 1 {
		t.Fatalf("%d fsyncs; want 1 (the background one; Close has nothing left)", n)
	}
}

// Close reports that the last records could not be made durable (a failing SD card), and still
// closes the file.
func TestCloseReportsAFailedFsync(t *testing.T) {
	l, err := Open(filepath.Join(t.TempDir(), FileName), Options{})
	if err != nil {
		t.Fatal(err)
	}
	broken := errors.New("input/output error")
	l.syncFile = func(*os.File) error { return broken }
	must(t, l.FinishWritten("m0", "fp", Complete, "", t0))
	err = l.Close()
	if !errors.Is(err, broken) || !strings.Contains(err.Error(), "fsync") {
		t.Fatalf("Close after a failed fsync: %v; want the fsync's error", err)
	}
	if err := l.FinishWritten("m1", "fp", Complete, "", t0); err == nil {
		t.Fatal("the log is still open after Close")
	}
}

// The running compaction waits for 2 × MaxIDs + 100 lines, not fewer (MaxIDs 3: 106).
func TestRunningCompactionWaitsForTwiceMaxIDsPlus100(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName)
	l, _ := open(t, path, 3)
	for i := range 106 {
		must(t, l.Start("m", "f", t0))
		if n := lines(t, path); n != i+1 {
			t.Fatalf("after %d writes the file has %d lines: compacted before 2 × 3 + 100", i+1, n)
		}
	}
	must(t, l.Start("m", "f", t0))
	if n := lines(t, path); n != 1 {
		t.Fatalf("after 107 writes the file has %d lines, want 1 (compacted past 2 × 3 + 100)", n)
	}
}
