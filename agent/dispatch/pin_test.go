package dispatch

import (
	"errors"
	"log/slog"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/c2d-project/c2d/agent/action"
	"github.com/c2d-project/c2d/hw/hwtest"
	"github.com/c2d-project/c2d/internal/testproc"
)

// A step that fails ends the plan there: no later step moves anything, the error is the job's,
// and its outputs go to their safe state.
func TestFailedStepStopsThePlan(t *testing.T) {
	b, d := setup(t)
	b.FailNext("relay1", 1, syscall.EIO)
	r := wait(t, submit(d,
		action.Step{Action: action.On, Target: "relay1"},
		action.Step{Action: action.On, Target: "act"},
	))
	if r.Err == nil || !r.Started {
		t.Fatalf("result %+v, want the relay1 error", r)
	}
	for _, tr := range after(b, "act") {
		if tr.On {
			t.Fatalf("act switched on after relay1's step failed: %v", after(b, "act"))
		}
	}
	if len(r.Safed) != 2 {
		t.Errorf("safed %v, want both targets", r.Safed)
	}
}

// Moved (complete_on: start) runs exactly once even for a plan that moves nothing (a wait), once
// it has run; never for a plan that failed before moving anything.
func TestMovedHookForPlanThatMovesNothing(t *testing.T) {
	b, d := setup(t)
	run := func(steps ...action.Step) (int, Result) {
		moved := 0
		ch := make(chan Result, 1)
		d.Submit(&Job{
			Plan:  action.NewPlan("m", "", steps, action.CompleteOnStart, time.Time{}),
			Moved: func() { moved++ },
			Done:  func(r Result) { ch <- r },
		})
		r := wait(t, ch)
		return moved, r
	}
	if n, r := run(action.Step{Action: action.Wait, Duration: 10 * ms}); n != 1 || r.Err != nil {
		t.Errorf("wait-only plan: Moved ran %d times (%+v), want once", n, r)
	}
	b.FailNext("relay1", 1, syscall.EIO)
	if n, r := run(action.Step{Action: action.On, Target: "relay1"}); n != 0 || r.Err == nil {
		t.Errorf("plan failing before any move: Moved ran %d times (%+v), want never", n, r)
	}
	if n, _ := run(action.Step{Action: action.On, Target: "relay1"}, action.Step{Action: action.Off, Target: "relay1"}); n != 1 {
		t.Errorf("plan moving twice: Moved ran %d times, want once", n)
	}
}

// Stats counts what runs and what has finished.
func TestStatsCountRunningAndFinished(t *testing.T) {
	b, d := setup(t)
	long := submit(d, action.Step{Action: action.Pulse, Target: "relay1", Duration: time.Hour})
	b.WaitHistory(t, "relay1", 2, 5*time.Second) // the pulse switched on: it runs
	queuedBehind := submit(d, action.Step{Action: action.On, Target: "relay1"})
	if q, r, f := d.Stats(); q != 1 || r != 1 || f != 0 {
		t.Fatalf("Stats during the pulse = queued %d, running %d, finished %d; want 1, 1, 0", q, r, f)
	}
	d.Shutdown()
	wait(t, long)
	if r := wait(t, queuedBehind); !errors.Is(r.Err, ErrShutdown) {
		t.Fatalf("queued job %+v", r)
	}
	if q, r, f := d.Stats(); q != 0 || r != 0 || f != 1 {
		t.Fatalf("Stats after Shutdown = queued %d, running %d, finished %d; want 0, 0, 1", q, r, f)
	}
}

// The dispatcher logs through the logger it is given: an output that cannot reach its safe state
// is reported there.
func TestUnsafeOutputIsLoggedToGivenLogger(t *testing.T) {
	b := hwtest.NewBoard(t, specs)
	var logs testproc.SyncBuffer
	d := New(b, map[string]bool{"relay1": false, "act": false, "buzzer": false}, slog.New(slog.NewTextHandler(&logs, nil)))
	t.Cleanup(d.Shutdown)
	b.FailNext("relay1", 2, syscall.EIO) // the step, then the safe-state drive
	if r := wait(t, submit(d, action.Step{Action: action.On, Target: "relay1"})); r.Err == nil || len(r.Safed) != 0 {
		t.Fatalf("result %+v, want the error and relay1 not safed", r)
	}
	if !strings.Contains(logs.String(), "cannot drive output to its safe state") || !strings.Contains(logs.String(), "relay1") {
		t.Fatalf("log %q does not report relay1's failed safe-state drive", logs.String())
	}
}
