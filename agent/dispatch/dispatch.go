package dispatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/c2d-project/c2d/agent/action"
	"github.com/c2d-project/c2d/hw"
)

// ErrShutdown is the Result error of a job cut short or never started because the agent stops.
var ErrShutdown = errors.New("agent shutting down")

// Job is one plan to run, with hooks into its lifecycle. Hooks run in the job's goroutine.
type Job struct {
	Plan *action.Plan
	// Begin runs once the job holds its outputs, before anything moves; an error aborts the job
	// with that error (Result.Started false). The agent records "started" in the executed-id log
	// here and re-checks expiry.
	Begin func() error
	// Moved runs once, right after the job first moved an output (for complete_on: start).
	Moved func()
	// Done runs once with the result.
	Done func(Result)
}

// Result is how a job ended.
type Result struct {
	// Started: Begin succeeded and steps ran (some may have moved outputs).
	Started bool
	// Err is nil when every step ran; ErrShutdown (wrapped) when cut short or never started; or
	// the hardware error (errors.As *hw.TransientError tells a transient one), or Begin's error.
	Err error
	// Safed lists the outputs driven to their safe state because the job did not finish.
	Safed []string
	// Elapsed is how long the steps ran.
	Elapsed time.Duration
}

// Dispatcher schedules jobs over a board.
type Dispatcher struct {
	board hw.Board
	safe  map[string]bool
	log   *slog.Logger

	ctx    context.Context // cancelled by Shutdown: running jobs stop waiting
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	pending []*Job
	busy    map[string]bool
	running int
	closed  bool
	ran     int
}

// New makes a dispatcher. safe maps each output name to its safe state.
func New(board hw.Board, safe map[string]bool, log *slog.Logger) *Dispatcher {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Dispatcher{board: board, safe: safe, log: log, ctx: ctx, cancel: cancel, busy: map[string]bool{}}
}

// Submit queues j; it never blocks. After Shutdown, j ends at once with ErrShutdown, not started.
func (d *Dispatcher) Submit(j *Job) {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			j.Done(Result{Err: fmt.Errorf("not started: %w", ErrShutdown)})
		}()
		return
	}
	d.pending = append(d.pending, j)
	d.scheduleLocked()
	d.mu.Unlock()
}

// Stats reports jobs queued and running, and jobs finished so far.
func (d *Dispatcher) Stats() (queued, running, finished int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.pending), d.running, d.ran
}

// Shutdown ends every queued job unstarted, cuts running jobs short (their outputs go to safe
// state) and waits for all of them to report Done.
func (d *Dispatcher) Shutdown() {
	d.mu.Lock()
	d.closed = true
	pending := d.pending
	d.pending = nil
	d.mu.Unlock()
	d.cancel()
	for _, j := range pending {
		j.Done(Result{Err: fmt.Errorf("not started: %w", ErrShutdown)})
	}
	d.wg.Wait()
}

// scheduleLocked starts every pending job whose outputs are free and not claimed by an earlier
// pending job (arrival order per output; no job overtakes an earlier one on a shared output).
func (d *Dispatcher) scheduleLocked() {
	if d.closed {
		return
	}
	blocked := map[string]bool{}
	for k, v := range d.busy {
		blocked[k] = v
	}
	kept := d.pending[:0]
	for _, j := range d.pending {
		free := true
		for _, t := range j.Plan.Targets {
			if blocked[t] {
				free = false
			}
		}
		for _, t := range j.Plan.Targets {
			blocked[t] = true
		}
		if !free {
			kept = append(kept, j)
			continue
		}
		for _, t := range j.Plan.Targets {
			d.busy[t] = true
		}
		d.running++
		d.wg.Add(1)
		go d.run(j)
	}
	for i := len(kept); i < len(d.pending); i++ {
		d.pending[i] = nil
	}
	d.pending = kept
}

func (d *Dispatcher) run(j *Job) {
	defer d.wg.Done()
	res := d.execute(j)
	j.Done(res)
	d.mu.Lock()
	for _, t := range j.Plan.Targets {
		delete(d.busy, t)
	}
	d.running--
	d.ran++
	d.scheduleLocked()
	d.mu.Unlock()
}

func (d *Dispatcher) execute(j *Job) Result {
	if d.ctx.Err() != nil {
		return Result{Err: fmt.Errorf("not started: %w", ErrShutdown)}
	}
	if j.Begin != nil {
		if err := j.Begin(); err != nil {
			return Result{Err: err}
		}
	}
	x := &execution{d: d, job: j}
	start := time.Now()
	var err error
	for _, s := range j.Plan.Steps {
		if err = x.step(s); err != nil {
			break
		}
	}
	res := Result{Started: true, Elapsed: time.Since(start)}
	if err != nil {
		res.Err = err
		res.Safed = d.toSafe(j.Plan.Targets)
	}
	if !x.moved && j.Moved != nil && err == nil {
		x.moved = true
		j.Moved()
	}
	return res
}

// toSafe drives outputs to their safe state, best effort, and returns those it reached.
func (d *Dispatcher) toSafe(names []string) []string {
	var done []string
	for _, n := range names {
		out := d.board.Output(n)
		if out == nil {
			continue
		}
		if err := out.Set(d.safe[n]); err != nil {
			d.log.Error("cannot drive output to its safe state", "output", n, "err", err)
			continue
		}
		done = append(done, n)
	}
	return done
}

type execution struct {
	d     *Dispatcher
	job   *Job
	moved bool
}

func (x *execution) set(name string, on bool) error {
	out := x.d.board.Output(name)
	if out == nil {
		return fmt.Errorf("%s: output missing from the board", name)
	}
	if err := out.Set(on); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if !x.moved {
		x.moved = true
		if x.job.Moved != nil {
			x.job.Moved()
		}
	}
	return nil
}

// sleepUntil waits for t on the process clock; Shutdown interrupts it.
func (x *execution) sleepUntil(t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return x.d.ctx.Err()
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-x.d.ctx.Done():
		return fmt.Errorf("cut short: %w", ErrShutdown)
	}
}

func (x *execution) step(s action.Step) error {
	if x.d.ctx.Err() != nil {
		return fmt.Errorf("cut short: %w", ErrShutdown)
	}
	switch s.Action {
	case action.On:
		return x.set(s.Target, true)
	case action.Off:
		return x.set(s.Target, false)
	case action.Toggle:
		out := x.d.board.Output(s.Target)
		if out == nil {
			return fmt.Errorf("%s: output missing from the board", s.Target)
		}
		return x.set(s.Target, !out.State())
	case action.Pulse:
		out := x.d.board.Output(s.Target)
		if out == nil {
			return fmt.Errorf("%s: output missing from the board", s.Target)
		}
		prev := out.State()
		if err := x.set(s.Target, true); err != nil {
			return err
		}
		// Timed from after the switch: the output is on for at least Duration.
		if err := x.sleepUntil(time.Now().Add(s.Duration)); err != nil {
			return err
		}
		return x.set(s.Target, prev)
	case action.Blink:
		out := x.d.board.Output(s.Target)
		if out == nil {
			return fmt.Errorf("%s: output missing from the board", s.Target)
		}
		prev := out.State()
		// Deadlines from the first switch-on: every transition happens no earlier than its place
		// in the rhythm, and late wake-ups do not accumulate into drift.
		var t time.Time
		for i := 0; i < s.Count; i++ {
			if err := x.set(s.Target, true); err != nil {
				return err
			}
			if i == 0 {
				t = time.Now()
			}
			t = t.Add(s.On)
			if err := x.sleepUntil(t); err != nil {
				return err
			}
			if err := x.set(s.Target, false); err != nil {
				return err
			}
			t = t.Add(s.Off)
			if err := x.sleepUntil(t); err != nil {
				return err
			}
		}
		if prev {
			return x.set(s.Target, true)
		}
		return nil
	case action.Wait:
		return x.sleepUntil(time.Now().Add(s.Duration))
	}
	return fmt.Errorf("unknown step %q", s.Action)
}
