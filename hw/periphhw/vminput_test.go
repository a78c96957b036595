//go:build vmgpio

package periphhw_test

import (
	"bufio"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/c2d-project/c2d/hw"
	"github.com/c2d-project/c2d/hw/periphhw"
)

func TestVMPi5Inputs(t *testing.T) { runScenario(t, "pi5", "TestVMInPi5Inputs") }

// inputEvents collects what the inputs report.
func inputEvents(in hw.Inputs) <-chan hw.InputEvent {
	ch := make(chan hw.InputEvent, 64)
	in.Notify(func(e hw.InputEvent) { ch <- e })
	return ch
}

func nextInput(t *testing.T, ch <-chan hw.InputEvent, name string, on bool) hw.InputEvent {
	t.Helper()
	select {
	case e := <-ch:
		if e.Input != name || e.On != on {
			t.Fatalf("input event %+v; want %s %v", e, name, on)
		}
		return e
	case <-time.After(5 * time.Second):
		t.Fatalf("no event for %s %v within 5s", name, on)
		return hw.InputEvent{}
	}
}

// TestVMInPi5Inputs: inputs on a real kernel's GPIO character device. The outside world is
// gpio-sim's pull attribute (a contact pulling the line one way or the other); the backend waits
// on the kernel's edge events and must see every change, debounced, and nothing else.
func TestVMInPi5Inputs(t *testing.T) {
	inScenario(t, "pi5")
	r := sim
	door, button := r.line("pinctrl-rp1", 22), r.line("pinctrl-rp1", 5)
	// The door's contact is open (the sim's pull up, as the line's own bias asks); the button's
	// line is pulled down by the outside world although its bias is none.
	if err := button.chip.SetPull(button.off, false); err != nil {
		t.Fatal(err)
	}
	specs := []hw.InputSpec{
		{Name: "door", Pin: "GPIO22", Line: -1, Pull: hw.PullUp, ActiveLow: true, Debounce: 20 * time.Millisecond, Edge: hw.EdgeBoth},
		{Name: "button", Chip: "pinctrl-rp1", Line: 5, Pull: hw.PullNone, Debounce: 300 * time.Millisecond, Edge: hw.EdgeBoth},
	}
	in, err := periphhw.OpenInputs(specs, periphhw.InputOptions{})
	if err != nil {
		t.Fatalf("OpenInputs: %v", err)
	}
	closed := false
	defer func() {
		if !closed {
			in.Close()
		}
	}()
	ch := inputEvents(in)
	// The bias asked for reaches the kernel: gpio-sim applies a consumer's pull-up to the line.
	wantValue(t, door, 1)
	if on, _ := in.Input("door").State(); on {
		t.Fatal("door reads closed with its contact open")
	}
	if on, _ := in.Input("button").State(); on {
		t.Fatal("button reads on while pulled down")
	}

	t.Run("edges", func(t *testing.T) {
		for i, closedNow := range []bool{true, false, true, false} {
			before := time.Now()
			if err := door.chip.SetPull(door.off, !closedNow); err != nil {
				t.Fatal(err)
			}
			e := nextInput(t, ch, "door", closedNow)
			if d := e.At.Sub(before); d < 20*time.Millisecond {
				t.Errorf("change %d reported %v after the edge, before the 20ms debounce", i, d)
			}
			if on, since := in.Input("door").State(); on != closedNow || !since.Equal(e.At) {
				t.Errorf("change %d: state %v since %v; event %+v", i, on, since, e)
			}
		}
	})

	t.Run("bounce is one change", func(t *testing.T) {
		// Five bounces within the 300ms debounce, ending high: one change to on.
		for i := 0; i < 5; i++ {
			if err := button.chip.SetPull(button.off, true); err != nil {
				t.Fatal(err)
			}
			if err := button.chip.SetPull(button.off, false); err != nil {
				t.Fatal(err)
			}
		}
		if err := button.chip.SetPull(button.off, true); err != nil {
			t.Fatal(err)
		}
		nextInput(t, ch, "button", true)
		select {
		case e := <-ch:
			t.Fatalf("a bouncing button gave a second event %+v", e)
		case <-time.After(600 * time.Millisecond): // two debounce periods: long enough for a wrong one
		}
	})

	t.Run("close releases", func(t *testing.T) {
		start := time.Now()
		if err := in.Close(); err != nil {
			t.Fatal(err)
		}
		closed = true
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("Close took %v: a watcher did not stop at Halt", d)
		}
		// Released: another process can request the line now (the kernel refuses it, EBUSY,
		// while our input request holds it).
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), holdEnv+"="+door.chip.ChipName+":22")
		cmd.Stderr = os.Stderr
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { stdin.Close(); _ = cmd.Wait() }()
		if line, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || line != "held\n" {
			t.Fatalf("another process could not take the door's line after Close: %q, %v", line, err)
		}
	})
}
