// Package logtest records log/slog records for tests that assert the lines an operator reads in
// the journal: what was said, with which attributes, and what was not said.
package logtest

import (
	"context"
	"log/slog"
	"sync"
)

// Recorder is a slog.Handler that keeps every record, at every level. Attributes added with
// Logger.With are kept with the records logged through that logger.
type Recorder struct {
	root  *Recorder // the one holding the records; nil for the root itself
	attrs []slog.Attr

	mu   sync.Mutex
	recs []map[string]any
}

// Logger returns a logger that writes into r.
func (r *Recorder) Logger() *slog.Logger { return slog.New(r) }

// Enabled reports true: a test sees debug lines too.
func (r *Recorder) Enabled(context.Context, slog.Level) bool { return true }

// Handle keeps the record as its attributes, the message under "msg" and the level under "level".
func (r *Recorder) Handle(_ context.Context, rec slog.Record) error {
	m := map[string]any{"msg": rec.Message, "level": rec.Level}
	for _, a := range r.attrs {
		m[a.Key] = a.Value.Any()
	}
	rec.Attrs(func(a slog.Attr) bool {
		m[a.Key] = a.Value.Any()
		return true
	})
	root := r.store()
	root.mu.Lock()
	root.recs = append(root.recs, m)
	root.mu.Unlock()
	return nil
}

// WithAttrs returns a handler that adds attrs to every record and keeps them in r.
func (r *Recorder) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &Recorder{root: r.store(), attrs: append(append([]slog.Attr(nil), r.attrs...), attrs...)}
}

// WithGroup ignores the group: tests look attributes up by their own key.
func (r *Recorder) WithGroup(string) slog.Handler { return r }

func (r *Recorder) store() *Recorder {
	if r.root != nil {
		return r.root
	}
	return r
}

// All returns every record so far, oldest first.
func (r *Recorder) All() []map[string]any {
	root := r.store()
	root.mu.Lock()
	defer root.mu.Unlock()
	return append([]map[string]any(nil), root.recs...)
}

// With returns the records whose message is msg, oldest first.
func (r *Recorder) With(msg string) []map[string]any {
	var out []map[string]any
	for _, m := range r.All() {
		if m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}
