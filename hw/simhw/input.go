package simhw

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/c2d-project/c2d/hw"
)

// InputOptions configure OpenInputs.
type InputOptions struct {
	// File holds the simulated inputs' logical states, {"door": "on", "pir": "off"}; whoever plays
	// the outside world (a person, the demo, a test) writes it, WriteInputs atomically. The
	// inputs follow it as it changes (inotify on its directory; no polling on Linux). Inputs it
	// does not name keep their state; a missing file leaves every input off.
	File string
	// Logger gets a warning for a file that does not parse or names unknown inputs; nil discards.
	Logger *slog.Logger
}

// Inputs is a simulated set of inputs. It implements hw.Inputs.
type Inputs struct {
	opts   InputOptions
	names  []string
	byName map[string]*simInput
	stop   chan struct{}
	done   chan struct{}

	mu      sync.Mutex
	notify  func(hw.InputEvent)
	closed  bool
	lastErr error
}

type simInput struct {
	s     *Inputs
	name  string
	on    bool
	since time.Time
}

var _ hw.Inputs = (*Inputs)(nil)

// OpenInputs validates specs, reads File once and starts following it.
func OpenInputs(specs []hw.InputSpec, opts InputOptions) (*Inputs, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Inputs{opts: opts, byName: map[string]*simInput{}, stop: make(chan struct{}), done: make(chan struct{})}
	now := time.Now()
	for _, sp := range specs {
		if sp.Name == "" || s.byName[sp.Name] != nil {
			return nil, &hw.InputError{Input: sp.Name, Field: "name", Err: errors.New("empty or repeated input name")}
		}
		if sp.Pin == "" && (sp.Chip == "" || sp.Line < 0) {
			return nil, &hw.InputError{Input: sp.Name, Field: "pin", Err: errors.New("no pin, and no chip and line, given")}
		}
		s.names = append(s.names, sp.Name)
		s.byName[sp.Name] = &simInput{s: s, name: sp.Name, since: now}
	}
	if len(specs) == 0 {
		close(s.done)
		return s, nil
	}
	if opts.File == "" {
		return nil, errors.New("simhw: inputs need an inputs file")
	}
	if err := os.MkdirAll(filepath.Dir(opts.File), 0o755); err != nil {
		return nil, fmt.Errorf("simhw: inputs file: %w", err)
	}
	w, err := watchFile(opts.File)
	if err != nil {
		return nil, fmt.Errorf("simhw: watch inputs file %s: %w", opts.File, err)
	}
	s.reload() // after the watch starts: a write in between is not missed
	go func() {
		defer close(s.done)
		w.run(s.stop, s.reload)
	}()
	return s, nil
}

// reload reads the file and applies every state that changed.
func (s *Inputs) reload() {
	data, err := os.ReadFile(s.opts.File)
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	var states map[string]string
	if err == nil {
		states, err = ParseInputs(data)
	}
	s.mu.Lock()
	s.lastErr = err
	fn := s.notify
	s.mu.Unlock()
	if err != nil {
		s.opts.Logger.Warn("simulated inputs file ignored", "file", s.opts.File, "err", err)
		return
	}
	names := make([]string, 0, len(states))
	for n := range states {
		names = append(names, n)
	}
	sort.Strings(names)
	now := time.Now()
	for _, n := range names {
		in := s.byName[n]
		if in == nil {
			s.opts.Logger.Warn("simulated inputs file names an undeclared input", "file", s.opts.File, "input", n, "declared", s.names)
			continue
		}
		on := states[n] == "on"
		s.mu.Lock()
		changed := on != in.on
		if changed {
			in.on, in.since = on, now
		}
		s.mu.Unlock()
		if changed && fn != nil {
			fn(hw.InputEvent{Input: n, On: on, At: now})
		}
	}
}

// ParseInputs parses an inputs file: one JSON object of input name → "on" or "off".
func ParseInputs(data []byte) (map[string]string, error) {
	var states map[string]string
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&states); err != nil {
		return nil, fmt.Errorf(`parse inputs: %w (want {"name": "on" or "off", ...})`, err)
	}
	if dec.More() {
		return nil, errors.New("parse inputs: trailing data after the JSON object")
	}
	if states == nil {
		return nil, errors.New(`parse inputs: want an object {"name": "on" or "off", ...}`)
	}
	for n, v := range states {
		if v != "on" && v != "off" {
			return nil, fmt.Errorf("parse inputs: %s: %q is not on or off", n, v)
		}
	}
	return states, nil
}

// WriteInputs replaces an inputs file atomically (a temporary file renamed over it).
func WriteInputs(path string, states map[string]bool) error {
	m := make(map[string]string, len(states))
	for n, on := range states {
		m[n] = map[bool]string{true: "on", false: "off"}[on]
	}
	data, err := json.Marshal(m)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	if _, err := f.Write(append(data, '\n')); err != nil {
		f.Close()
		os.Remove(f.Name())
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(f.Name())
		return err
	}
	if err := os.Chmod(f.Name(), 0o644); err != nil {
		os.Remove(f.Name())
		return err
	}
	return os.Rename(f.Name(), path)
}

// Input implements hw.Inputs.
func (s *Inputs) Input(name string) hw.Input {
	if in, ok := s.byName[name]; ok {
		return in
	}
	return nil
}

// Names implements hw.Inputs.
func (s *Inputs) Names() []string { return append([]string(nil), s.names...) }

// Notify implements hw.Inputs.
func (s *Inputs) Notify(fn func(hw.InputEvent)) {
	s.mu.Lock()
	s.notify = fn
	s.mu.Unlock()
}

// Err is the last problem with the inputs file (nil once it parses again).
func (s *Inputs) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastErr
}

// Close implements hw.Inputs.
func (s *Inputs) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	close(s.stop)
	<-s.done
	return nil
}

// Name implements hw.Input.
func (in *simInput) Name() string { return in.name }

// State implements hw.Input.
func (in *simInput) State() (bool, time.Time) {
	in.s.mu.Lock()
	defer in.s.mu.Unlock()
	return in.on, in.since
}
