package broker

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Issue #17: a listener whose Accept failed once (EMFILE when the process ran out of file
// descriptors) used to return from Serve for good while the kernel kept completing connections that
// nobody served, with nothing logged and /healthz at 200. Now Accept errors are retried with
// backoff, logged, counted (Events.AcceptError), and a listener that is failing or stopped makes
// Healthy report an error, which /healthz and the systemd watchdog follow.

// maxAcceptBackoff is the longest pause between Accept retries (net/http's value).
const maxAcceptBackoff = time.Second

// failingFor is how long after its last Accept error a listener still counts as failing: longer
// than maxAcceptBackoff, so a listener that keeps failing never looks healthy between retries,
// and one whose errors stopped (it accepted, or it waits in Accept) recovers.
const failingFor = 2*maxAcceptBackoff + 500*time.Millisecond

// acceptLogEvery bounds the log lines of a listener that keeps failing.
const acceptLogEvery = 30 * time.Second

// retryable reports whether an Accept error may go away by itself: resource exhaustion or a
// connection that was reset before it was accepted. Anything else (the socket itself is broken)
// stops the listener.
func retryable(err error) bool {
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED, syscall.ECONNRESET, syscall.EINTR, syscall.EPROTO, syscall.EPERM} {
		if errors.Is(err, e) {
			return true
		}
	}
	var ne interface{ Timeout() bool }
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	// What net/http checks: the deprecated Temporary is still what the net package sets for
	// these errors on every platform.
	var te interface{ Temporary() bool }
	return errors.As(err, &te) && te.Temporary()
}

// acceptHealth is one listener's Accept record.
type acceptHealth struct {
	onError func(error) // Events.AcceptError for this listener; may be nil

	mu       sync.Mutex
	lastErr  error
	lastAt   time.Time // of lastErr
	since    time.Time // first error of the current streak
	streak   int       // errors since the last accepted connection
	loggedAt time.Time
	stop     error // Serve returned: the listener serves no more
}

func (h *acceptHealth) failed(err error, log *slog.Logger, backoff time.Duration) {
	now := time.Now()
	h.mu.Lock()
	h.lastErr, h.lastAt = err, now
	if h.streak == 0 {
		h.since = now
	}
	h.streak++
	streak := h.streak
	logIt := streak == 1 || now.Sub(h.loggedAt) >= acceptLogEvery
	if logIt {
		h.loggedAt = now
	}
	onError := h.onError
	h.mu.Unlock()
	if onError != nil {
		onError(err)
	}
	if logIt {
		// log is mochi's listener logger: it already names the listener.
		log.Error("mqtt listener cannot accept connections; retrying (out of file descriptors? see LimitNOFILE in docs/security.md)",
			"error", err, "failures", streak, "retry_in", backoff)
	}
}

func (h *acceptHealth) accepted() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.streak > 0 {
		h.streak = 0
		h.loggedAt = time.Time{}
	}
}

func (h *acceptHealth) stopped(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.stop = err
}

// check returns why the listener is not serving, or nil: it has stopped, or its Accepts have been
// failing for at least minFailing.
func (h *acceptHealth) check(now time.Time, minFailing time.Duration) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case h.stop != nil:
		return fmt.Errorf("stopped: %w", h.stop)
	case h.streak > 0 && now.Sub(h.lastAt) < failingFor && now.Sub(h.since) >= minFailing:
		return fmt.Errorf("accept failing (%d times in a row since %s): %w", h.streak, h.since.UTC().Format(time.RFC3339), h.lastErr)
	}
	return nil
}

// healthReporter is what Healthy needs from a listener.
type healthReporter interface {
	acceptCheck(now time.Time, minFailing time.Duration) error
}

func (l *socket) acceptCheck(now time.Time, minFailing time.Duration) error {
	return l.health.check(now, minFailing)
}

// Healthy reports whether every listener is serving: nil, or an error naming each listener that is
// failing to accept connections or has stopped. It is nil before Start and after Close.
func (b *Broker) Healthy() error { return b.listenersServing(0) }

// Stuck is Healthy for the systemd watchdog: a listener that has stopped, or whose Accepts have
// been failing for at least d. Running out of descriptors under a legitimate reconnect storm
// clears by itself, and restarting would drop every session; a leak that never clears, or a dead
// listener, is what a restart mends.
func (b *Broker) Stuck(d time.Duration) error { return b.listenersServing(d) }

func (b *Broker) listenersServing(minFailing time.Duration) error {
	b.mu.RLock()
	closed := b.closed
	var bad []string
	now := time.Now()
	for name, l := range b.listeners {
		if hr, ok := l.(healthReporter); ok {
			if err := hr.acceptCheck(now, minFailing); err != nil {
				bad = append(bad, fmt.Sprintf("mqtt listener %s (%s): %v", name, l.Address(), err))
			}
		}
	}
	b.mu.RUnlock()
	if closed || len(bad) == 0 {
		return nil
	}
	sort.Strings(bad)
	return errors.New(strings.Join(bad, "; "))
}

var _ net.Listener = (*watchedListener)(nil)
