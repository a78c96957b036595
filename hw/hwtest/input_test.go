package hwtest_test

import (
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"periph.io/x/conn/v3/gpio"

	"github.com/c2d-project/c2d/hw"
	"github.com/c2d-project/c2d/hw/hwtest"
	"github.com/c2d-project/c2d/hw/periphhw"
	"github.com/c2d-project/c2d/internal/testproc"
)

// events collects what Notify reports.
func events(in hw.Inputs) <-chan hw.InputEvent {
	ch := make(chan hw.InputEvent, 64)
	in.Notify(func(e hw.InputEvent) { ch <- e })
	return ch
}

func next(t *testing.T, ch <-chan hw.InputEvent) hw.InputEvent {
	t.Helper()
	select {
	case e := <-ch:
		return e
	case <-time.After(5 * time.Second):
		t.Fatal("no input event within 5s")
		return hw.InputEvent{}
	}
}

// A door contact to ground with a pull-up: open reads high (off with active_low), closing the
// contact pulls it low (on). The line is requested with the configured pull and edges.
func TestInputPullUpActiveLow(t *testing.T) {
	in := hwtest.NewInputs(t, []hw.InputSpec{{Name: "door", Pin: "GPIO22", Line: -1, Pull: hw.PullUp, ActiveLow: true, Edge: hw.EdgeBoth}})
	ch := events(in)
	if pull, edge := in.Pin("door").Requested(); pull != gpio.PullUp || edge != gpio.BothEdges {
		t.Fatalf("requested pull %v edge %v", pull, edge)
	}
	on, since := in.Input("door").State()
	if on || since.IsZero() {
		t.Fatalf("open door with pull-up reads on=%v since=%v; want off", on, since)
	}
	before := time.Now()
	in.Pin("door").Drive(gpio.Low)
	if e := next(t, ch); e.Input != "door" || !e.On || e.At.Before(before) {
		t.Fatalf("event %+v", e)
	}
	if on, s := in.Input("door").State(); !on || s.Before(before) {
		t.Fatalf("after closing: on=%v since=%v", on, s)
	}
	in.Set("door", false)
	if e := next(t, ch); e.On {
		t.Fatalf("event %+v; want off", e)
	}
	if got := in.Names(); len(got) != 1 || got[0] != "door" || in.Input("window") != nil {
		t.Fatalf("names %v", got)
	}
}

// A bouncing contact yields one change once it has been quiet for the debounce period; a bounce
// that ends where it started yields none.
func TestInputDebounce(t *testing.T) {
	const debounce = 50 * time.Millisecond
	in := hwtest.NewInputs(t, []hw.InputSpec{{Name: "button", Pin: "GPIO5", Line: -1, Pull: hw.PullDown, Debounce: debounce, Edge: hw.EdgeBoth}})
	ch := events(in)
	p := in.Pin("button")
	start := time.Now()
	for i := 0; i < 5; i++ {
		p.Drive(gpio.High)
		p.Drive(gpio.Low)
	}
	p.Drive(gpio.High)
	e := next(t, ch)
	if !e.On || e.At.Sub(start) < debounce {
		t.Fatalf("event %+v %v after the first edge; want on, after at least %v", e, e.At.Sub(start), debounce)
	}
	// Bounce and return to on: no event. The off that follows is the next one seen.
	p.Drive(gpio.Low)
	p.Drive(gpio.High)
	time.Sleep(3 * debounce) // let a wrong event surface: there is nothing to synchronise on
	p.Drive(gpio.Low)
	if e := next(t, ch); e.On {
		t.Fatalf("a bounce that returned to on was reported: %+v", e)
	}
	select {
	case e := <-ch:
		t.Fatalf("extra event %+v", e)
	default:
	}
}

// With edge rising, only low→high edges are watched: the fall shows when the next rise arrives.
func TestInputRisingEdgeOnly(t *testing.T) {
	in := hwtest.NewInputs(t, []hw.InputSpec{{Name: "pir", Chip: "x", Line: 3, Pull: hw.PullNone, Edge: hw.EdgeRising}})
	ch := events(in)
	p := in.Pin("pir")
	if _, edge := p.Requested(); edge != gpio.RisingEdge {
		t.Fatalf("edge %v", edge)
	}
	p.Drive(gpio.High)
	if e := next(t, ch); !e.On {
		t.Fatalf("%+v", e)
	}
	p.Drive(gpio.Low) // not watched
	p.Drive(gpio.High)
	select {
	case e := <-ch:
		t.Fatalf("event %+v for an unwatched edge", e)
	case <-time.After(100 * time.Millisecond):
	}
	if on, _ := in.Input("pir").State(); !on {
		t.Fatal("state off")
	}
}

// Close interrupts the watchers and releases the lines; a second Close is harmless.
func TestInputClose(t *testing.T) {
	in := hwtest.NewInputs(t, []hw.InputSpec{{Name: "a", Pin: "A", Line: -1, Edge: hw.EdgeBoth}, {Name: "b", Pin: "B", Line: -1, Edge: hw.EdgeBoth, Debounce: time.Hour}})
	in.Pin("b").Drive(gpio.High) // b's watcher now sits in its hour-long debounce
	done := make(chan error)
	go func() { done <- in.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return")
	}
	if !in.Pin("a").Released() || !in.Pin("b").Released() {
		t.Fatal("lines not released")
	}
	if err := in.Close(); err != nil {
		t.Fatal(err)
	}
}

// An input on a line an output holds, an unknown line or a repeated name fail naming the field.
func TestOpenInputsErrors(t *testing.T) {
	chip := hwtest.Pi5Chip()
	sys := periphhw.System{Chips: []periphhw.Chip{chip}}
	out, err := sys.Open([]hw.OutputSpec{{Name: "relay1", Kind: hw.KindGPIO, Pin: "GPIO17", Line: -1}}, periphhw.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	for _, c := range []struct {
		specs []hw.InputSpec
		want  string
	}{
		{[]hw.InputSpec{{Name: "door", Chip: "pinctrl-rp1", Line: 17}}, `door.line: pinctrl-rp1 (gpiochip0) line 17 is already used by output relay1`},
		{[]hw.InputSpec{{Name: "door", Pin: "GPIO99", Line: -1}}, `door.pin: no line "GPIO99"`},
		{[]hw.InputSpec{{Name: "a", Pin: "GPIO22", Line: -1}, {Name: "b", Pin: "GPIO22", Line: -1}}, `b.pin: pinctrl-rp1 (gpiochip0) line 22 is already used by input a`},
	} {
		_, err := sys.OpenInputs(c.specs, periphhw.InputOptions{Taken: out.Resolutions()})
		var ie *hw.InputError
		if err == nil || !errors.As(err, &ie) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v; want %q", c.specs, err, c.want)
		}
	}
	_, err = sys.OpenInputs([]hw.InputSpec{{Name: "door", Pin: "GPIO99", Line: -1}}, periphhw.InputOptions{})
	if !errors.Is(err, hw.ErrNotFound) {
		t.Errorf("unknown pin: %v does not wrap hw.ErrNotFound", err)
	}
}

// A wait that fails (a read error on the line) is logged once and retried a second later; the
// level is read then, so a change the failed wait missed still shows.
func TestInputFailedWaitRetries(t *testing.T) {
	var logs testproc.SyncBuffer
	in := hwtest.NewInputsLogged(t, []hw.InputSpec{{Name: "door", Pin: "GPIO22", Line: -1, Pull: hw.PullDown, Edge: hw.EdgeBoth}},
		slog.New(slog.NewTextHandler(&logs, nil)))
	ch := events(in)
	p := in.Pin("door")
	p.FailWaits(3)
	p.Halt() // wake the watcher, which is already waiting, into the failing waits
	start := time.Now()
	p.Drive(gpio.High)
	if e := next(t, ch); !e.On || time.Since(start) < 900*time.Millisecond {
		t.Fatalf("event %+v after %v; want on, after the 1s back-off", e, time.Since(start))
	}
	if n := strings.Count(logs.String(), "waiting for an edge failed"); n != 1 {
		t.Errorf("%d warnings for one run of failures:\n%s", n, logs.String())
	}
}
