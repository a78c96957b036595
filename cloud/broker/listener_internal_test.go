package broker

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"time"

	"github.com/c2d-project/c2d/cloud/broker/internal/mochi/listeners"
)

// syncBuffer is a log sink safe for concurrent writers (internal/testproc imports this package).
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// flakyListener fails its first n Accepts with err (as the kernel does when the process is out of
// file descriptors), then accepts for real.
type flakyListener struct {
	net.Listener
	mu  sync.Mutex
	n   int
	err error
}

func (f *flakyListener) Accept() (net.Conn, error) {
	f.mu.Lock()
	if f.n > 0 {
		f.n--
		f.mu.Unlock()
		return nil, f.err
	}
	f.mu.Unlock()
	return f.Listener.Accept()
}

func (f *flakyListener) left() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}

func emfile() error {
	return &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
}

// startFlaky serves l (a tcpListener or wsListener) behind a flakyListener; establish echoes one
// byte, so a served connection answers.
func startFlaky(t *testing.T, l listeners.Listener, s *socket, fails int, err error) (*flakyListener, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	if err := l.Init(slog.New(slog.NewTextHandler(logs, nil))); err != nil {
		t.Fatal(err)
	}
	fl := &flakyListener{Listener: s.ln, n: fails, err: err}
	s.ln = fl
	go l.Serve(func(_ string, c net.Conn) error {
		b := make([]byte, 1)
		if _, err := io.ReadFull(c, b); err != nil {
			return err
		}
		_, err := c.Write(b)
		return err
	})
	return fl, logs
}

func echo(t *testing.T, addr string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte{'x'}); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatalf("connection not served after Accept errors: %v", err)
	}
}

// Issue #17: one EMFILE from Accept stopped the MQTT listener for good.
func TestTCPListenerSurvivesAcceptErrors(t *testing.T) {
	l := newTCPListener("mqtt", "127.0.0.1:0", nil, 5*time.Second)
	var counted atomic.Int32
	l.health.onError = func(err error) {
		if !errors.Is(err, syscall.EMFILE) {
			t.Errorf("AcceptError got %v, want EMFILE", err)
		}
		counted.Add(1)
	}
	fl, logs := startFlaky(t, l, &l.socket, 6, emfile())
	defer l.Close(func(string) {})

	// While it keeps failing the listener reports so.
	deadline := time.Now().Add(10 * time.Second)
	for fl.left() > 3 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if err := l.acceptCheck(time.Now(), 0); err == nil || !strings.Contains(err.Error(), "too many open files") {
		t.Errorf("acceptCheck while failing = %v, want the EMFILE", err)
	}
	if err := l.acceptCheck(time.Now(), time.Hour); err != nil {
		t.Errorf("acceptCheck(failing for an hour) after a few ms of failures = %v, want nil", err)
	}
	echo(t, l.Address())
	if got := counted.Load(); got != 6 {
		t.Errorf("AcceptError called %d times, want 6", got)
	}
	if err := l.acceptCheck(time.Now(), 0); err != nil {
		t.Errorf("acceptCheck after a served connection = %v, want nil", err)
	}
	if n := strings.Count(logs.String(), "cannot accept connections"); n != 1 {
		t.Errorf("%d log lines for one run of failures, want 1:\n%s", n, logs)
	}
	// A listener whose errors stopped long ago but that accepted nothing since (idle) is fine.
	if err := l.acceptCheck(time.Now().Add(failingFor), 0); err != nil {
		t.Errorf("acceptCheck later = %v", err)
	}
}

func TestTCPListenerStopsOnPermanentErrorAndSaysSo(t *testing.T) {
	l := newTCPListener("mqtt", "127.0.0.1:0", nil, 5*time.Second)
	_, logs := startFlaky(t, l, &l.socket, 1, errors.New("socket is broken"))
	defer l.Close(func(string) {})
	deadline := time.Now().Add(10 * time.Second)
	for l.acceptCheck(time.Now(), 0) == nil && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if err := l.acceptCheck(time.Now().Add(time.Hour), time.Hour); err == nil || !strings.Contains(err.Error(), "stopped: socket is broken") {
		t.Fatalf("acceptCheck = %v, want stopped", err)
	}
	if !strings.Contains(logs.String(), "mqtt listener stopped") {
		t.Errorf("no log line:\n%s", logs)
	}
}

func TestTCPListenerCloseEndsBackoff(t *testing.T) {
	l := newTCPListener("mqtt", "127.0.0.1:0", nil, 5*time.Second)
	logs := &syncBuffer{}
	if err := l.Init(slog.New(slog.NewTextHandler(logs, nil))); err != nil {
		t.Fatal(err)
	}
	l.ln = &flakyListener{Listener: l.ln, n: 1 << 30, err: emfile()}
	done := make(chan struct{})
	go func() { l.Serve(nil); close(done) }()
	deadline := time.Now().Add(10 * time.Second)
	for l.acceptCheck(time.Now(), 0) == nil && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	l.Close(func(string) {})
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Serve still running 5 s after Close")
	}
	if err := l.acceptCheck(time.Now(), 0); err != nil && strings.Contains(err.Error(), "stopped") {
		t.Errorf("a closed listener is not a stopped one: %v", err)
	}
}

func TestRetryable(t *testing.T) {
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ECONNABORTED, syscall.ENOBUFS} {
		if !retryable(&net.OpError{Op: "accept", Err: os.NewSyscallError("accept4", e)}) {
			t.Errorf("%v not retried", e)
		}
	}
	for _, e := range []error{net.ErrClosed, errors.New("boom"), syscall.EBADF} {
		if retryable(&net.OpError{Op: "accept", Err: e}) {
			t.Errorf("%v retried", e)
		}
	}
}

// Issue #17: one flooding device produced 100,001 INFO lines. A session's lines are limited to a
// burst, then one per second, and the next line says how many were suppressed.
func TestSessionLogIsRateLimited(t *testing.T) {
	var mu sync.Mutex
	now := time.Unix(1000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	var out syncBuffer
	log := slog.New(limitedHandler{slog.NewTextHandler(&out, nil), newLogLimit(clock)}).With("device", "flood")
	for range 100001 {
		log.Info("malformed disposition")
	}
	log.Error("errors always pass")
	if n := strings.Count(out.String(), "malformed disposition"); n != logBurst {
		t.Fatalf("%d lines of 100,001 logged at once, want the burst of %d", n, logBurst)
	}
	mu.Lock()
	now = now.Add(logEvery)
	mu.Unlock()
	log.Info("malformed disposition")
	if !strings.Contains(out.String(), "suppressed_lines=99951") || !strings.Contains(out.String(), "errors always pass") {
		t.Fatalf("log:\n%s", out.String()[max(0, len(out.String())-400):])
	}
}

// What /healthz (minFailing 0) and the watchdog (Stuck: 5 minutes) see of a listener.
func TestAcceptHealthWindows(t *testing.T) {
	now := time.Now()
	for _, tc := range []struct {
		name       string
		h          *acceptHealth
		minFailing time.Duration
		bad        bool
	}{
		{"never failed", &acceptHealth{}, 0, false},
		{"failing now", &acceptHealth{streak: 3, lastAt: now, since: now.Add(-time.Second), lastErr: syscall.EMFILE}, 0, true},
		{"failing briefly, watchdog", &acceptHealth{streak: 3, lastAt: now, since: now.Add(-time.Second), lastErr: syscall.EMFILE}, 5 * time.Minute, false},
		{"failing for 10 min, watchdog", &acceptHealth{streak: 600, lastAt: now, since: now.Add(-10 * time.Minute), lastErr: syscall.EMFILE}, 5 * time.Minute, true},
		{"errors stopped (idle in Accept)", &acceptHealth{streak: 3, lastAt: now.Add(-failingFor), since: now.Add(-time.Hour), lastErr: syscall.EMFILE}, 0, false},
		{"stopped", &acceptHealth{stop: errors.New("boom")}, 5 * time.Minute, true},
	} {
		if err := tc.h.check(now, tc.minFailing); (err != nil) != tc.bad {
			t.Errorf("%s: check = %v, want failing %v", tc.name, err, tc.bad)
		}
	}
}
