package broker

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// A device that floods the hub with things worth a log line (malformed dispositions, reject
// reports, refused subscriptions) must not flood the journal: issue #17 saw 100,001 INFO lines
// from one device. Each device logs through its own rate limit, kept across its reconnects (a device
// that reconnects in a loop gets no new burst): a burst of logBurst lines, then one per logEvery;
// the next line that passes says how many were suppressed. Errors always pass.
const (
	logBurst = 50
	logEvery = time.Second
	// maxLogLimits bounds the per-device limits kept; past it, limits back at a full burst (the
	// same as a new one) are forgotten first.
	maxLogLimits = 10000
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

// full reports whether l is back at a full burst with nothing suppressed: forgetting it changes
// nothing.
func (l *logLimit) full() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.suppressed == 0 && l.tokens+float64(l.now().Sub(l.last))/float64(logEvery) >= logBurst
}

// logLimits holds one logLimit per device (and module).
type logLimits struct {
	now func() time.Time
	mu  sync.Mutex
	m   map[string]*logLimit
}

func newLogLimits(now func() time.Time) *logLimits {
	return &logLimits{now: now, m: map[string]*logLimit{}}
}

// get returns key's limit, making it on first use.
func (ls *logLimits) get(key string) *logLimit {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if l := ls.m[key]; l != nil {
		return l
	}
	if len(ls.m) >= maxLogLimits {
		for k, l := range ls.m {
			if l.full() {
				delete(ls.m, k)
			}
		}
		for k := range ls.m { // every device flooding at once: the bound still holds
			if len(ls.m) < maxLogLimits {
				break
			}
			delete(ls.m, k)
		}
	}
	l := newLogLimit(ls.now)
	ls.m[key] = l
	return l
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
