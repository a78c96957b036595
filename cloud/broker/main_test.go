package broker

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"testing"
	"time"
)

// TestMain arms a watchdog: once CI saw this package hang until -test.timeout, and the end of
// its log (all that was kept) held no test's goroutine. Shortly before the deadline the watchdog
// writes every goroutine's stack to stderr and then, as the last lines, only the goroutines with
// a frame in a _test.go file (the hung test, its clean-ups and helpers), and exits 1.
func TestMain(m *testing.M) {
	flag.Parse()
	if d := watchdogDelay(flag.Lookup("test.timeout")); d > 0 {
		t := time.AfterFunc(d, func() { watchdogFire(os.Stderr, d) })
		defer t.Stop()
	}
	os.Exit(m.Run())
}

// watchdogMargin is how long before -test.timeout the watchdog fires.
const watchdogMargin = time.Minute

// watchdogDelay is when the watchdog fires from now: watchdogMargin before the timeout, or at 90 %
// of a timeout too short for that margin; 0 when there is no timeout.
func watchdogDelay(f *flag.Flag) time.Duration {
	if f == nil {
		return 0
	}
	g, ok := f.Value.(flag.Getter)
	if !ok {
		return 0
	}
	timeout, ok := g.Get().(time.Duration)
	if !ok || timeout <= 0 {
		return 0
	}
	if timeout <= 2*watchdogMargin {
		return timeout - timeout/10
	}
	return timeout - watchdogMargin
}

func watchdogFire(w io.Writer, after time.Duration) {
	dump := allStacks()
	tests := testGoroutines(dump)
	fmt.Fprintf(w, "\nWATCHDOG: the tests are still running %v after they started, close to -test.timeout: all goroutines:\n\n%s\n", after.Round(time.Second), dump)
	fmt.Fprintf(w, "\nWATCHDOG: the %d goroutines with a frame in a _test.go file:\n\n", len(tests))
	for _, g := range tests {
		fmt.Fprintf(w, "%s\n\n", g)
	}
	fmt.Fprintf(w, "WATCHDOG: exiting before -test.timeout (the goroutines above are the tests')\n")
	os.Exit(1)
}

// allStacks is runtime.Stack of every goroutine, whatever its size.
func allStacks() []byte {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return buf[:n]
		}
		buf = make([]byte, 2*len(buf))
	}
}

// testGoroutines returns the goroutines of a runtime.Stack dump that have a frame in a _test.go
// file, the watchdog's own and TestMain's excepted.
func testGoroutines(dump []byte) [][]byte {
	var out [][]byte
	for _, g := range bytes.Split(dump, []byte("\n\n")) {
		switch {
		case !bytes.HasPrefix(g, []byte("goroutine ")),
			!bytes.Contains(g, []byte("_test.go:")),
			bytes.Contains(g, []byte("broker.watchdogFire(")),
			bytes.Contains(g, []byte("broker.TestMain(")):
			continue
		}
		out = append(out, g)
	}
	return out
}

func TestWatchdogDelay(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	timeout := fs.Duration("test.timeout", 0, "")
	for _, tc := range []struct{ timeout, want time.Duration }{
		{0, 0},
		{15 * time.Minute, 14 * time.Minute},
		{5 * time.Minute, 4 * time.Minute},
		{2 * time.Minute, 108 * time.Second},
		{10 * time.Second, 9 * time.Second},
	} {
		*timeout = tc.timeout
		if got := watchdogDelay(fs.Lookup("test.timeout")); got != tc.want {
			t.Errorf("-test.timeout %v: watchdog after %v, want %v", tc.timeout, got, tc.want)
		}
	}
	if got := watchdogDelay(nil); got != 0 {
		t.Errorf("no -test.timeout flag: watchdog after %v, want none", got)
	}
}

// The goroutines the watchdog ends with are the tests' own: the hung one blocked in a channel
// receive is among them, the watchdog and the goroutines with no test frame are not.
func TestWatchdogListsTheTestGoroutines(t *testing.T) {
	stop := make(chan struct{})
	parked := make(chan struct{})
	go func() {
		close(parked)
		<-stop // a test blocked without a deadline
	}()
	defer close(stop)
	<-parked
	gs := testGoroutines(allStacks())
	var self, blocked bool
	for _, g := range gs {
		if !bytes.Contains(g, []byte("_test.go:")) {
			t.Errorf("listed a goroutine with no _test.go frame:\n%s", g)
		}
		if bytes.Contains(g, []byte("broker.allStacks(")) && bytes.Contains(g, []byte("TestWatchdogListsTheTestGoroutines(")) {
			self = true
		}
		if bytes.Contains(g, []byte("TestWatchdogListsTheTestGoroutines.func")) && bytes.Contains(g, []byte("chan receive")) {
			blocked = true
		}
	}
	if !self || !blocked {
		t.Fatalf("this test's goroutine listed %v, its blocked goroutine %v, in:\n%s", self, blocked, bytes.Join(gs, []byte("\n\n")))
	}
	for _, g := range gs {
		if bytes.Contains(g, []byte("broker.TestMain(")) {
			t.Errorf("listed TestMain's goroutine:\n%s", g)
		}
	}
}
