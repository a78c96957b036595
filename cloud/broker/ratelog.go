package broker

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// A device that floods the hub with things worth a log line (malformed dispositions, reject
// reports, refused subscriptions) must not flood the journal: issue #17 saw 100,001 INFO lines
// from one device. Each session logs through its own rate limit: a burst of logBurst lines, then
// one per logEvery; the next line that passes says how many were suppressed. Errors always pass.
const (
	logBurst = 50
	logEvery = time.Second
)

type logLimit struct {
	now func() time.Time

	mu         sync.Mutex
	tokens     float64
	last       time.Time
	suppressed int
}

func newLogLimit(now func() time.Time) *logLimit {
	return &logLimit{now: now, tokens: logBurst, last: now()}
}

// take reports whether a line may be logged and, if so, how many were suppressed before it.
func (l *logLimit) take() (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	l.tokens = min(logBurst, l.tokens+float64(now.Sub(l.last))/float64(logEvery))
	l.last = now
	if l.tokens < 1 {
		l.suppressed++
		return false, 0
	}
	l.tokens--
	n := l.suppressed
	l.suppressed = 0
	return true, n
}

// limitedHandler is a session's slog.Handler: its limit is shared by every derived logger.
type limitedHandler struct {
	h slog.Handler
	l *logLimit
}

func (h limitedHandler) Enabled(ctx context.Context, lvl slog.Level) bool {
	return h.h.Enabled(ctx, lvl)
}

func (h limitedHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelError {
		return h.h.Handle(ctx, r)
	}
	ok, n := h.l.take()
	if !ok {
		return nil
	}
	if n > 0 {
		r = r.Clone()
		r.AddAttrs(slog.Int("suppressed_lines", n))
	}
	return h.h.Handle(ctx, r)
}

func (h limitedHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return limitedHandler{h.h.WithAttrs(as), h.l}
}

func (h limitedHandler) WithGroup(n string) slog.Handler {
	return limitedHandler{h.h.WithGroup(n), h.l}
}
