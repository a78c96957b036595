package ledger

import (
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// fsyncs counts the ledger's fsyncs and can hold them at a gate.
type fsyncs struct {
	mu      sync.Mutex
	n       int
	entered chan struct{} // receives once per fsync begun, when set
	gate    chan struct{} // fsyncs wait for it to close, when set
}

func (c *fsyncs) install(l *Ledger) {
	l.syncFile = func(f *os.File) error {
		c.mu.Lock()
		c.n++
		entered, gate := c.entered, c.gate
		c.mu.Unlock()
		if entered != nil {
			entered <- struct{}{}
		}
		if gate != nil {
			<-gate
		}
		return f.Sync()
	}
}

// waitEntered waits for the next fsync to begin, failing with msg if none does.
func (c *fsyncs) waitEntered(t *testing.T, msg string) {
	t.Helper()
	select {
	case <-c.entered:
	case <-time.After(10 * time.Second):
		t.Fatal(msg)
	}
}

func (c *fsyncs) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// SyncSoon returns at once and its fsync follows on the ledger's own goroutine; done records
// written while that fsync runs share the next one; Close makes nothing durable twice and
// leaves every record on disk.
func TestSyncSoonFsyncsInTheBackgroundAndCoalesces(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName)
	l, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	c := &fsyncs{entered: make(chan struct{}, 16), gate: make(chan struct{})}
	c.install(l)
	must(t, l.FinishWritten("m0", "fp", Complete, "", t0))
	l.SyncSoon()
	c.waitEntered(t, "SyncSoon did not fsync")
	// The first fsync is held: the log stays usable meanwhile (no lock is held across it).
	for _, id := range []string{"m1", "m2", "m3"} {
		must(t, l.FinishWritten(id, "fp", Reject, "no", t0))
		l.SyncSoon()
	}
	if _, ok := l.Lookup("m3"); !ok {
		t.Fatal("a record written during the background fsync is not visible")
	}
	close(c.gate)
	must(t, l.Close())
	// One fsync for m0, one for m1..m3 (by the syncer or, if it was told to stop first, by Close).
	if n := c.count(); n != 2 {
		t.Fatalf("%d fsyncs for one SyncSoon and three more made during it; want 2", n)
	}
	l2, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	for _, id := range []string{"m0", "m1", "m2", "m3"} {
		if e, ok := l2.Lookup(id); !ok || !e.Done {
			t.Fatalf("%s after reopen: %+v, %v", id, e, ok)
		}
	}
}

// A record written without SyncSoon is made durable by Close; a Start is durable when it returns
// (its own fsync, which also covers an earlier done record: nothing is left for the syncer).
func TestCloseSyncsWhatIsLeftAndStartStaysSynchronous(t *testing.T) {
	l, err := Open(filepath.Join(t.TempDir(), FileName), Options{})
	if err != nil {
		t.Fatal(err)
	}
	c := &fsyncs{}
	c.install(l)
	must(t, l.FinishWritten("a", "fp", Complete, "", t0))
	must(t, l.Start("b", "fp", t0))
	if n := c.count(); n != 1 {
		t.Fatalf("Start returned after %d fsyncs, want 1", n)
	}
	must(t, l.FinishWritten("b", "fp", Complete, "", t0))
	must(t, l.Close())
	if n := c.count(); n != 2 {
		t.Fatalf("%d fsyncs after Close, want 2 (Start, then Close for the last done record)", n)
	}
	must(t, l.Close()) // twice is harmless
	l.SyncSoon()       // after Close: nothing to do, no goroutine left behind
	if n := c.count(); n != 2 {
		t.Fatalf("%d fsyncs after a second Close and a late SyncSoon, want 2", n)
	}
}
