package simhw

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/c2d-project/c2d/hw"
)

// Options configure Open.
type Options struct {
	// StateFile receives every output's current state as JSON, replaced atomically on every
	// change. Empty keeps the state in memory only. Its directory is created if missing.
	StateFile string
	// TransitionLog, if set, gets one JSON line appended per transition.
	TransitionLog string
	// Sync fsyncs the state file (and its directory) and the log on every change. Off, a power
	// loss may lose the last states, but a reader still never sees a partial state file.
	Sync bool
	// FailNext makes the first n Set calls on the named outputs fail with a *hw.TransientError
	// wrapping ErrInjected, without changing anything.
	FailNext map[string]int
}

var boardIDs atomic.Uint64

// ErrInjected is the cause of failures injected with Options.FailNext or Board.FailNext.
var ErrInjected = errors.New("simhw: injected failure")

// Board is a simulated board. It implements hw.Board.
type Board struct {
	opts  Options
	outs  []*output
	index map[string]*output

	tmpName string // temporary file beside the state file

	mu      sync.Mutex // guards everything below and the outputs' state; writes are serialised
	seq     uint64
	log     *os.File
	closed  bool
	lastErr error
}

type output struct {
	b       *Board
	spec    hw.OutputSpec
	on      bool
	changes uint64
	failN   int
}

var _ hw.Board = (*Board)(nil)

// Open validates specs, drives every output to its safe state (logged with cause "open") and
// writes the first state file before returning.
func Open(specs []hw.OutputSpec, opts Options) (hw.Board, error) {
	b, err := OpenBoard(specs, opts)
	if err != nil {
		return nil, err
	}
	return b, nil
}

// OpenBoard is Open returning the concrete type, for tests that inject faults or take snapshots.
func OpenBoard(specs []hw.OutputSpec, opts Options) (*Board, error) {
	if err := validate(specs); err != nil {
		return nil, err
	}
	b := &Board{opts: opts, index: map[string]*output{}}
	if opts.StateFile != "" {
		dir, base := filepath.Split(opts.StateFile)
		b.tmpName = filepath.Join(dir, fmt.Sprintf(".%s.%d-%d.tmp", base, os.Getpid(), boardIDs.Add(1)))
	}
	for _, s := range specs {
		o := &output{b: b, spec: s, on: s.Safe, failN: opts.FailNext[s.Name]}
		b.outs = append(b.outs, o)
		b.index[s.Name] = o
	}
	for name := range opts.FailNext {
		if b.index[name] == nil {
			return nil, fmt.Errorf("simhw: FailNext names unknown output %q", name)
		}
	}
	if opts.StateFile != "" {
		if err := os.MkdirAll(filepath.Dir(opts.StateFile), 0o755); err != nil {
			return nil, fmt.Errorf("simhw: state file: %w", err)
		}
	}
	if opts.TransitionLog != "" {
		last, err := lastSeq(opts.TransitionLog)
		if err != nil {
			return nil, fmt.Errorf("simhw: transition log %s: %w", opts.TransitionLog, err)
		}
		b.seq = last
		if b.log, err = os.OpenFile(opts.TransitionLog, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644); err != nil {
			return nil, fmt.Errorf("simhw: transition log: %w", err)
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now().UTC()
	for _, o := range b.outs {
		b.seq++
		if err := b.logTransition(now, o, CauseOpen); err != nil {
			b.closeLog()
			return nil, err
		}
	}
	if err := b.writeState(now); err != nil {
		b.closeLog()
		return nil, err
	}
	return b, nil
}

func validate(specs []hw.OutputSpec) error {
	names := map[string]bool{}
	used := map[string]string{}
	for _, s := range specs {
		oe := func(field, format string, args ...any) error {
			return &hw.OutputError{Output: s.Name, Field: field, Err: fmt.Errorf(format, args...)}
		}
		if s.Name == "" {
			return oe("name", "empty output name")
		}
		if names[s.Name] {
			return oe("name", "output %q declared twice", s.Name)
		}
		names[s.Name] = true
		var key, field string
		switch s.Kind {
		case hw.KindGPIO:
			switch {
			case s.Chip != "" && s.Pin != "":
				key, field = "gpio "+s.Chip+" "+s.Pin, "pin"
			case s.Pin != "":
				key, field = "gpio "+s.Pin, "pin"
			case s.Chip != "" && s.Line >= 0:
				key, field = fmt.Sprintf("gpio %s %d", s.Chip, s.Line), "line"
			default:
				return oe("pin", "no pin, and no chip and line, given")
			}
		case hw.KindLED:
			if s.LED == "" {
				return oe("led", "no LED name given")
			}
			key, field = "led "+s.LED, "led"
		default:
			return oe("kind", "unknown kind %q (want %q or %q)", s.Kind, hw.KindGPIO, hw.KindLED)
		}
		if other, dup := used[key]; dup {
			return oe(field, "%s is already used by output %q", key, other)
		}
		used[key] = s.Name
	}
	return nil
}

// lastSeq finds the seq of the last complete line of an existing log, so seq keeps increasing
// across restarts. Only the tail is read.
func lastSeq(path string) (uint64, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	const tail = 64 << 10
	off := max(fi.Size()-tail, 0)
	buf := make([]byte, fi.Size()-off)
	if _, err := f.ReadAt(buf, off); err != nil && err != io.EOF {
		return 0, err
	}
	if off > 0 { // the first line may be cut: skip to the next one
		if i := indexByte(buf, '\n'); i >= 0 {
			buf = buf[i+1:]
		}
	}
	ts, err := ParseTransitions(buf)
	if err != nil {
		return 0, err
	}
	if len(ts) == 0 {
		return 0, nil
	}
	return ts[len(ts)-1].Seq, nil
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

// Output implements hw.Board.
func (b *Board) Output(name string) hw.Output {
	if o, ok := b.index[name]; ok {
		return o
	}
	return nil
}

// Names implements hw.Board.
func (b *Board) Names() []string {
	n := make([]string, len(b.outs))
	for i, o := range b.outs {
		n[i] = o.spec.Name
	}
	return n
}

// Healthy implements hw.Board: the last state file or log write failed, or the board is closed.
func (b *Board) Healthy() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return hw.ErrClosed
	}
	return b.lastErr
}

// FailNext makes the next n Set calls on output fail with a *hw.TransientError.
func (b *Board) FailNext(output string, n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if o := b.index[output]; o != nil {
		o.failN = n
	}
}

// Snapshot returns what the state file holds (or would hold, when there is none).
func (b *Board) Snapshot() State {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.state(time.Now().UTC())
}

// Close drives every output to its safe state (logged with cause "close") and writes the final
// state file with "closed": true.
func (b *Board) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	now := time.Now().UTC()
	var errs []error
	for _, o := range b.outs {
		if o.on != o.spec.Safe {
			o.on = o.spec.Safe
			o.changes++
			b.seq++
			if err := b.logTransition(now, o, CauseClose); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := b.writeState(now); err != nil {
		errs = append(errs, err)
	}
	b.closeLog()
	return errors.Join(errs...)
}

func (b *Board) closeLog() {
	if b.log != nil {
		_ = b.log.Close()
		b.log = nil
	}
}

// Name implements hw.Output.
func (o *output) Name() string { return o.spec.Name }

// State implements hw.Output.
func (o *output) State() bool {
	o.b.mu.Lock()
	defer o.b.mu.Unlock()
	return o.on
}

// Set implements hw.Output. Setting the current state again writes nothing.
func (o *output) Set(on bool) error {
	b := o.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return fmt.Errorf("%s: %w", o.spec.Name, hw.ErrClosed)
	}
	if o.failN > 0 {
		o.failN--
		return fmt.Errorf("%s: set %v: %w", o.spec.Name, on, &hw.TransientError{Err: ErrInjected})
	}
	if on == o.on {
		return nil
	}
	now := time.Now().UTC()
	o.on = on
	o.changes++
	b.seq++
	if err := b.writeState(now); err != nil {
		// The state file is the simulated hardware: the change did not happen.
		o.on = !on
		o.changes--
		b.seq--
		return fmt.Errorf("%s: %w", o.spec.Name, err)
	}
	// The change happened; a log that cannot be written is reported by Healthy, not by failing
	// a Set whose effect is real (the agent would retry it).
	_ = b.logTransition(now, o, CauseSet)
	return nil
}

func (b *Board) state(now time.Time) State {
	s := State{Updated: now, Seq: b.seq, Closed: b.closed, Outputs: make(map[string]OutputState, len(b.outs))}
	for _, o := range b.outs {
		st := OutputState{
			On: o.on, Safe: o.spec.Safe, Kind: o.spec.Kind, Pin: o.spec.Pin, Chip: o.spec.Chip,
			LED: o.spec.LED, ActiveLow: o.spec.ActiveLow, Level: "low", Changes: o.changes,
		}
		if o.on != o.spec.ActiveLow {
			st.Level = "high"
		}
		if o.spec.Kind == hw.KindGPIO && o.spec.Chip != "" && o.spec.Pin == "" {
			line := o.spec.Line
			st.Line = &line
		}
		s.Outputs[o.spec.Name] = st
	}
	return s
}

// logTransition appends one line carrying the current seq, in one write(2) so that readers see
// whole lines. Called with b.mu held, after b.seq was advanced.
func (b *Board) logTransition(now time.Time, o *output, cause string) error {
	if b.log == nil {
		return nil
	}
	line, err := json.Marshal(Transition{Seq: b.seq, Time: now, Output: o.spec.Name, On: o.on, Cause: cause})
	if err != nil {
		return err
	}
	line = append(line, '\n')
	if _, err := b.log.Write(line); err != nil {
		b.lastErr = fmt.Errorf("simhw: transition log: %w", err)
		return b.lastErr
	}
	if b.opts.Sync {
		if err := b.log.Sync(); err != nil {
			b.lastErr = fmt.Errorf("simhw: transition log: %w", err)
			return b.lastErr
		}
	}
	return nil
}

// writeState replaces the state file atomically: temp file in the same directory, optional fsync,
// rename. Called with b.mu held.
func (b *Board) writeState(now time.Time) error {
	if b.opts.StateFile == "" {
		return nil
	}
	err := b.writeStateFile(now)
	if err != nil {
		b.lastErr = fmt.Errorf("simhw: state file %s: %w", b.opts.StateFile, err)
		return b.lastErr
	}
	b.lastErr = nil
	return nil
}

func (b *Board) writeStateFile(now time.Time) error {
	data, err := json.MarshalIndent(b.state(now), "", "  ")
	if err != nil {
		return err
	}
	data = append(data, '\n')
	dir := filepath.Dir(b.opts.StateFile)
	// One temporary name per board: writes are serialised under b.mu, and O_TRUNC recovers from
	// a leftover of a crashed run. Created 0644 so that other users can watch the state.
	f, err := os.OpenFile(b.tmpName, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	tmp := f.Name()
	fail := func(err error) error {
		_ = f.Close()
		_ = os.Remove(tmp)
		return err
	}
	if _, err := f.Write(data); err != nil {
		return fail(err)
	}
	if b.opts.Sync {
		if err := f.Sync(); err != nil {
			return fail(err)
		}
	}
	if err := f.Close(); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, b.opts.StateFile); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	if b.opts.Sync {
		if d, err := os.Open(dir); err == nil {
			err = d.Sync()
			_ = d.Close()
			return err
		}
	}
	return nil
}
