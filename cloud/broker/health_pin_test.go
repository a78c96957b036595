package broker

import (
	"errors"
	"log/slog"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/c2d-project/c2d/internal/logtest"
)

// A listener's failing streak starts at its first Accept error: one error just now is not yet
// "failing for 5 minutes" for the watchdog (Stuck), and the error names that first error's time.
func TestAcceptFailingStreakStartsAtTheFirstError(t *testing.T) {
	h := &acceptHealth{}
	quiet := slog.New(&logtest.Recorder{})
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
	rec := &logtest.Recorder{}
	log := slog.New(rec)
	h.failed(syscall.EMFILE, log, time.Millisecond)
	h.failed(syscall.EMFILE, log, time.Millisecond)
	if n := len(rec.All()); n != 1 {
		t.Fatalf("%d lines for two errors in a row, want 1", n)
	}
	h.mu.Lock()
	h.loggedAt = time.Now().Add(-acceptLogEvery - time.Second)
	h.mu.Unlock()
	h.failed(syscall.EMFILE, log, time.Millisecond)
	rs := rec.All()
	if len(rs) != 2 {
		t.Fatalf("%d lines once the last was older than %v, want 2", len(rs), acceptLogEvery)
	}
	if v := rs[1]["failures"]; v != int64(3) {
		t.Fatalf("second line says failures=%v, want 3", v)
	}
}

// Healthy names each listener that is failing or stopped and is nil otherwise; Stuck(d) counts a
// failing listener only after d; both are nil after Close.
func TestBrokerHealthyAndStuckNameTheFailingListener(t *testing.T) {
	b, _ := startPinBroker(t, Options{WSAddr: "127.0.0.1:0"})
	if err := b.Healthy(); err != nil {
		t.Fatalf("Healthy of a serving broker: %v", err)
	}
	if err := b.Stuck(time.Minute); err != nil {
		t.Fatalf("Stuck of a serving broker: %v", err)
	}
	ws := b.listeners[ListenerWS].(*wsListener)
	ws.health.failed(syscall.EMFILE, slog.New(&logtest.Recorder{}), time.Millisecond)
	err := b.Healthy()
	if err == nil || !strings.Contains(err.Error(), "mqtt listener "+ListenerWS+" (") || strings.Contains(err.Error(), "mqtt listener "+ListenerMQTT+" (") {
		t.Fatalf("Healthy with the WebSocket listener failing = %v, want it named and only it", err)
	}
	if err := b.Stuck(time.Minute); err != nil {
		t.Fatalf("Stuck(1 min) after one Accept error just now: %v", err)
	}
	b.listeners[ListenerMQTT].(*tcpListener).health.stopped(errors.New("boom"))
	if err := b.Stuck(time.Minute); err == nil || !strings.Contains(err.Error(), "mqtt listener "+ListenerMQTT+" (") || !strings.Contains(err.Error(), "stopped: boom") {
		t.Fatalf("Stuck with the TCP listener stopped = %v, want it named as stopped", err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Healthy(); err != nil {
		t.Fatalf("Healthy after Close: %v", err)
	}
}
