package dispatch

import (
	"errors"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/c2d-project/c2d/agent/action"
	"github.com/c2d-project/c2d/hw"
	"github.com/c2d-project/c2d/hw/hwtest"
)

var specs = []hw.OutputSpec{
	{Name: "relay1", Kind: hw.KindGPIO, Pin: "GPIO17", Line: -1, ActiveLow: true},
	{Name: "act", Kind: hw.KindLED, LED: "ACT", Line: -1},
	{Name: "buzzer", Kind: hw.KindGPIO, Pin: "GPIO27", Line: -1, Safe: false},
}

const ms = time.Millisecond

func setup(t *testing.T) (*hwtest.Board, *Dispatcher) {
	t.Helper()
	b := hwtest.NewBoard(t, specs)
	safe := map[string]bool{}
	for _, s := range specs {
		safe[s.Name] = s.Safe
	}
	d := New(b, safe, nil)
	t.Cleanup(d.Shutdown)
	return b, d
}

// submit queues a plan and returns a channel with its result.
func submit(d *Dispatcher, steps ...action.Step) <-chan Result {
	ch := make(chan Result, 1)
	d.Submit(&Job{Plan: action.NewPlan("", "", steps, action.CompleteOnFinish, time.Time{}), Done: func(r Result) { ch <- r }})
	return ch
}

func wait(t *testing.T, ch <-chan Result) Result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("job did not finish")
		return Result{}
	}
}

// after drops Open's safe-state writes.
func after(b *hwtest.Board, output string) []hwtest.Transition {
	h := b.History(output)
	return h[1:]
}

func states(tr []hwtest.Transition) []bool {
	s := make([]bool, len(tr))
	for i, x := range tr {
		s[i] = x.On
	}
	return s
}

func equal(a, b []bool) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestSimpleActions(t *testing.T) {
	b, d := setup(t)
	for _, s := range []action.Step{
		{Action: action.On, Target: "relay1"},
		{Action: action.Toggle, Target: "relay1"},
		{Action: action.Toggle, Target: "relay1"},
		{Action: action.Off, Target: "relay1"},
	} {
		if r := wait(t, submit(d, s)); r.Err != nil || !r.Started {
			t.Fatalf("%v: %+v", s, r)
		}
	}
	h := after(b, "relay1")
	if !equal(states(h), []bool{true, false, true, false}) {
		t.Errorf("relay1 went %v", h)
	}
	if h[0].Level != false { // active-low: on drives the line low
		t.Errorf("relay1 on drove level %v, want low", h[0].Level)
	}
}

func TestPulseAndBlinkTiming(t *testing.T) {
	b, d := setup(t)
	r := wait(t, submit(d, action.Step{Action: action.Pulse, Target: "relay1", Duration: 80 * ms}))
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	h := after(b, "relay1")
	if !equal(states(h), []bool{true, false}) {
		t.Fatalf("pulse went %v", h)
	}
	if on := h[1].Time.Sub(h[0].Time); on < 80*ms || on > 80*ms+time.Second {
		t.Errorf("pulse held %v, want 80ms", on)
	}

	// Blink from "on" returns to on; cycles keep their rhythm.
	wait(t, submit(d, action.Step{Action: action.On, Target: "act"}))
	r = wait(t, submit(d, action.Step{Action: action.Blink, Target: "act", Count: 3, On: 30 * ms, Off: 40 * ms}))
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	h = after(b, "act")[1:]
	if !equal(states(h), []bool{true, false, true, false, true, false, true}) {
		t.Fatalf("blink went %v", h)
	}
	// Each transition happens no earlier than its place in the rhythm counted from the first
	// switch-on (a late wake-up shortens the next phase instead of shifting the rest: no drift),
	// and not much later.
	var at time.Duration
	for i := 1; i < 7; i++ {
		if i%2 == 1 {
			at += 30 * ms
		} else {
			at += 40 * ms
		}
		if got := h[i].Time.Sub(h[0].Time); got < at || got > at+time.Second {
			t.Errorf("transition %d at +%v, want +%v", i, got, at)
		}
	}
}

func TestOrderPerOutputConcurrencyAcross(t *testing.T) {
	b, d := setup(t)
	long := submit(d, action.Step{Action: action.Pulse, Target: "relay1", Duration: 300 * ms})
	next := submit(d, action.Step{Action: action.On, Target: "relay1"})
	other := submit(d, action.Step{Action: action.On, Target: "act"})
	wait(t, other)
	wait(t, long)
	wait(t, next)
	relay := after(b, "relay1")
	act := after(b, "act")
	if !equal(states(relay), []bool{true, false, true}) {
		t.Fatalf("relay1 went %v: the queued on must follow the whole pulse", relay)
	}
	if !act[0].Time.Before(relay[1].Time) {
		t.Errorf("act switched at %v, after relay1's pulse ended at %v: different outputs must not wait", act[0], relay[1])
	}
}

func TestCommandHoldsItsOutputs(t *testing.T) {
	b, d := setup(t)
	cmd := submit(d,
		action.Step{Action: action.On, Target: "act"},
		action.Step{Action: action.Wait, Duration: 100 * ms},
		action.Step{Action: action.On, Target: "buzzer"},
		action.Step{Action: action.Off, Target: "buzzer"},
	)
	// Arrives while the command waits; the command has not touched buzzer yet but owns it.
	later := submit(d, action.Step{Action: action.On, Target: "buzzer"})
	free := submit(d, action.Step{Action: action.On, Target: "relay1"})
	wait(t, free)
	wait(t, cmd)
	wait(t, later)
	if got := states(after(b, "buzzer")); !equal(got, []bool{true, false, true}) {
		t.Errorf("buzzer went %v, want the command's on/off before the later on", got)
	}
	all := b.Transitions()
	var relayAt, buzzerAt time.Time
	for _, tr := range all[len(specs):] {
		if tr.Output == "relay1" && relayAt.IsZero() {
			relayAt = tr.Time
		}
		if tr.Output == "buzzer" && buzzerAt.IsZero() {
			buzzerAt = tr.Time
		}
	}
	if !relayAt.Before(buzzerAt) {
		t.Errorf("relay1 (not in the command) switched at %v, after the command's buzzer step at %v", relayAt, buzzerAt)
	}
}

func TestShutdownCutsShortToSafeState(t *testing.T) {
	b, d := setup(t)
	running := submit(d, action.Step{Action: action.Pulse, Target: "relay1", Duration: time.Hour})
	queued := submit(d, action.Step{Action: action.On, Target: "relay1"})
	b.WaitHistory(t, "relay1", 2, 5*time.Second) // the pulse switched on
	start := time.Now()
	d.Shutdown()
	r := wait(t, running)
	if !r.Started || !errors.Is(r.Err, ErrShutdown) || len(r.Safed) != 1 || r.Safed[0] != "relay1" {
		t.Errorf("running job result %+v", r)
	}
	if q := wait(t, queued); q.Started || !errors.Is(q.Err, ErrShutdown) {
		t.Errorf("queued job result %+v: must end unstarted", q)
	}
	if time.Since(start) > 5*time.Second {
		t.Error("Shutdown waited for the pulse")
	}
	h := after(b, "relay1")
	if !equal(states(h), []bool{true, false}) || b.Output("relay1").State() {
		t.Errorf("relay1 went %v: want on, then safe (off)", h)
	}
	if late := wait(t, submit(d, action.Step{Action: action.On, Target: "act"})); late.Started || !errors.Is(late.Err, ErrShutdown) {
		t.Errorf("job after shutdown %+v", late)
	}
}

func TestHardwareErrors(t *testing.T) {
	b, d := setup(t)
	b.FailNext("relay1", 1, nil) // EBUSY → transient
	r := wait(t, submit(d, action.Step{Action: action.On, Target: "relay1"}))
	var te *hw.TransientError
	if !errors.As(r.Err, &te) || !r.Started {
		t.Fatalf("EBUSY result %+v, want a *hw.TransientError", r)
	}
	b.FailNext("act", 1, syscall.EIO)
	wait(t, submit(d, action.Step{Action: action.Pulse, Target: "relay1", Duration: 20 * ms}))
	r = wait(t, submit(d, action.Step{Action: action.Blink, Target: "act", Count: 2, On: 20 * ms, Off: 20 * ms}))
	if r.Err == nil || errors.As(r.Err, &te) {
		t.Fatalf("EIO result %+v, want a permanent error", r)
	}
	if r.Err.Error()[:4] != "act:" {
		t.Errorf("error %q does not name the output", r.Err)
	}
}

func TestBeginAndMovedHooks(t *testing.T) {
	b, d := setup(t)
	refused := errors.New("expired")
	ch := make(chan Result, 1)
	d.Submit(&Job{
		Plan:  action.NewPlan("m", "", []action.Step{{Action: action.On, Target: "relay1"}}, action.CompleteOnFinish, time.Time{}),
		Begin: func() error { return refused },
		Done:  func(r Result) { ch <- r },
	})
	if r := wait(t, ch); r.Started || !errors.Is(r.Err, refused) {
		t.Errorf("result %+v", r)
	}
	if n := len(after(b, "relay1")); n != 0 {
		t.Errorf("relay1 moved %d times after Begin refused", n)
	}

	var events []string
	done := make(chan struct{})
	d.Submit(&Job{
		Plan:  action.NewPlan("m", "", []action.Step{{Action: action.Pulse, Target: "relay1", Duration: 50 * ms}}, action.CompleteOnStart, time.Time{}),
		Begin: func() error { events = append(events, "begin"); return nil },
		Moved: func() { events = append(events, fmt.Sprint("moved while on: ", b.Output("relay1").State())) },
		Done:  func(Result) { events = append(events, "done"); close(done) },
	})
	<-done
	if len(events) != 3 || events[0] != "begin" || events[1] != "moved while on: true" || events[2] != "done" {
		t.Errorf("hooks ran %v", events)
	}
}
