package broker

import (
	"log/slog"
	"syscall"
	"testing"
	"time"
)

// A listener's failing streak starts at its first Accept error: one error just now is not yet
// "failing for 5 minutes" for the watchdog (Stuck), and the error names that first error's time.
func TestAcceptFailingStreakStartsAtTheFirstError(t *testing.T) {
	h := &acceptHealth{}
	quiet := slog.New(&recordHandler{})
	before := time.Now()
	h.failed(syscall.EMFILE, quiet, time.Millisecond)
	if err := h.check(time.Now(), 5*time.Minute); err != nil {
		t.Fatalf("one Accept error just now counts as failing for 5 min: %v", err)
	}
	h.mu.Lock()
	since := h.since
	h.mu.Unlock()
	if since.Before(before) {
		t.Fatalf("streak since %v, before the first error at %v", since, before)
	}
}

// A listener that keeps failing logs its first error, then at most once per acceptLogEvery: a
// streak whose last line is older than that logs again.
func TestAcceptErrorsLogAgainAfterAcceptLogEvery(t *testing.T) {
	h := &acceptHealth{}
	rec := &recordHandler{}
	log := slog.New(rec)
	h.failed(syscall.EMFILE, log, time.Millisecond)
	h.failed(syscall.EMFILE, log, time.Millisecond)
	if n := len(rec.all()); n != 1 {
		t.Fatalf("%d lines for two errors in a row, want 1", n)
	}
	h.mu.Lock()
	h.loggedAt = time.Now().Add(-acceptLogEvery - time.Second)
	h.mu.Unlock()
	h.failed(syscall.EMFILE, log, time.Millisecond)
	rs := rec.all()
	if len(rs) != 2 {
		t.Fatalf("%d lines once the last was older than %v, want 2", len(rs), acceptLogEvery)
	}
	if v := rs[1]["failures"]; v != int64(3) {
		t.Fatalf("second line says failures=%v, want 3", v)
	}
}
