package hwtest_test

import (
	"errors"
	"sync"
	"testing"
	"time"

	"periph.io/x/conn/v3/gpio"

	"github.com/c2d-project/c2d/hw"
	"github.com/c2d-project/c2d/hw/hwtest"
)

var specs = []hw.OutputSpec{
	{Name: "relay", Kind: hw.KindGPIO, Pin: "GPIO17", Line: -1, ActiveLow: true},
	{Name: "fan", Kind: hw.KindGPIO, Chip: "pinctrl-x", Line: 3, Safe: true},
	{Name: "act", Kind: hw.KindLED, LED: "ACT"},
}

func TestBoardRecordsTransitions(t *testing.T) {
	b := hwtest.NewBoard(t, specs)
	open := b.Transitions()
	if len(open) != 3 {
		t.Fatalf("Open wrote %v, want one safe-state write per output", open)
	}
	for i, s := range specs {
		if open[i].Output != s.Name || open[i].On != s.Safe || open[i].Seq != i+1 {
			t.Errorf("open write %d = %v, want %s safe %v", i, open[i], s.Name, s.Safe)
		}
	}
	if open[0].Level != gpio.High {
		t.Errorf("active-low relay safe off at level %v, want High", open[0].Level)
	}

	// Another goroutine acts, as the agent's workers do; the test waits on writes, not on time.
	go func() {
		for _, on := range []bool{true, false, true} {
			_ = b.Output("relay").Set(on)
		}
		_ = b.Output("act").Set(true)
	}()
	h := b.WaitHistory(t, "relay", 4, 5*time.Second)
	want := []bool{false, true, false, true}
	for i, tr := range h {
		if tr.On != want[i] || tr.Level == gpio.Level(tr.On) {
			t.Errorf("relay write %d = %v (level %v), want on=%v inverted", i, tr, tr.Level, want[i])
		}
		if i > 0 && tr.Time.Before(h[i-1].Time) {
			t.Errorf("timestamps go backwards: %v", h)
		}
	}
	b.WaitFor(t, 5*time.Second, func(all []hwtest.Transition) bool {
		return all[len(all)-1].Output == "act" && all[len(all)-1].On
	})
	if b.Pin("act").Level() != gpio.High || b.Pin("relay").Level() != gpio.Low {
		t.Errorf("fake levels act=%v relay=%v", b.Pin("act").Level(), b.Pin("relay").Level())
	}
	for _, s := range specs {
		if n := b.Pin(s.Name).Reads(); n != 0 {
			t.Errorf("%s read back %d times", s.Name, n)
		}
	}
}

func TestBoardFailNext(t *testing.T) {
	b := hwtest.NewBoard(t, specs)
	b.FailNext("fan", 2, nil)
	for i := 0; i < 2; i++ {
		var te *hw.TransientError
		if err := b.Output("fan").Set(false); !errors.As(err, &te) {
			t.Fatalf("Set %d: %v, want *hw.TransientError", i, err)
		}
	}
	if !b.Output("fan").State() {
		t.Fatal("State changed although Set failed")
	}
	if err := b.Output("fan").Set(false); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	b.FailNext("fan", 1, boom)
	if err := b.Output("fan").Set(true); !errors.Is(err, boom) {
		t.Fatalf("Set: %v, want boom", err)
	}
	if len(b.History("fan")) != 2 { // the safe-state write and the one that succeeded
		t.Fatalf("history %v", b.History("fan"))
	}
}

func TestBoardClosedInCleanupDrivesSafe(t *testing.T) {
	var b *hwtest.Board
	t.Run("inner", func(t *testing.T) {
		b = hwtest.NewBoard(t, specs)
		if err := b.Output("relay").Set(true); err != nil {
			t.Fatal(err)
		}
	})
	if b.Output("relay").State() || b.Pin("relay").Level() != gpio.High || !b.Pin("relay").Released() {
		t.Fatal("cleanup did not close the board into its safe state")
	}
}

// Concurrent writers on different outputs and a waiting reader, for -race.
func TestBoardConcurrent(t *testing.T) {
	b := hwtest.NewBoard(t, specs)
	var wg sync.WaitGroup
	for _, name := range []string{"relay", "fan", "act"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				_ = b.Output(name).Set(i%2 == 0)
			}
		}()
	}
	all := b.WaitFor(t, 10*time.Second, func(all []hwtest.Transition) bool { return len(all) >= 153 })
	wg.Wait()
	for i, tr := range all {
		if tr.Seq != i+1 {
			t.Fatalf("seq %d at index %d", tr.Seq, i)
		}
	}
}
