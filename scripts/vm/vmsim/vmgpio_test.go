//go:build vmgpio

// The harness's own check, run first in the VM: a line driven straight through periph's
// character-device driver (no c2d code) shows up in sim_gpioN/value and in the trace, and a
// brightness written to a uleds LED comes back on its fd. When this fails, the VM or the kernel
// modules are broken, not the code under test.
package vmsim_test

import (
	"fmt"
	"os"
	"testing"
	"time"

	"periph.io/x/conn/v3/driver/driverreg"
	"periph.io/x/conn/v3/gpio"
	"periph.io/x/host/v3/gpioioctl"

	"github.com/c2d-project/c2d/scripts/vm/vmsim"
)

var chip *vmsim.Chip

func TestMain(m *testing.M) {
	var err error
	// Before periph's init: it enumerates the chips once.
	chip, err = vmsim.NewChip("selftest", "c2d-selftest", []string{"", "L1", "", "L3"})
	if err != nil {
		fmt.Fprintln(os.Stderr, "setup:", err)
		os.Exit(2)
	}
	code := m.Run()
	if err := chip.Remove(); err != nil {
		fmt.Fprintln(os.Stderr, "teardown:", err)
		code = 1
	}
	os.Exit(code)
}

func TestVMCharDevLineReachesSimulator(t *testing.T) {
	if _, err := driverreg.Init(); err != nil {
		t.Fatal(err)
	}
	var pc *gpioioctl.GPIOChip
	for _, c := range gpioioctl.Chips {
		if c.Label() == "c2d-selftest" {
			pc = c
		}
	}
	if pc == nil {
		t.Fatalf("periph did not enumerate the simulated chip %s", chip.ChipName)
	}
	if pc.Name() != chip.ChipName || pc.LineCount() != 4 || pc.ByNumber(3).Name() != "L3" {
		t.Fatalf("periph sees %s with %d lines, line 3 %q; configfs made %s with 4, line 3 L3",
			pc.Name(), pc.LineCount(), pc.ByNumber(3).Name(), chip.ChipName)
	}
	tr, err := vmsim.StartTrace()
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Stop()

	line := pc.ByNumber(3)
	defer line.Close()
	for i, l := range []gpio.Level{gpio.High, gpio.Low, gpio.High} {
		if err := line.Out(l); err != nil {
			t.Fatalf("step %d: Out(%v): %v", i, l, err)
		}
		want := 0
		if l {
			want = 1
		}
		if err := chip.WaitValue(3, want, time.Second); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if v, _ := chip.Value(1); v != 0 {
			t.Fatalf("step %d: untouched line 1 reads %d", i, v)
		}
	}
	evs, err := tr.Events(chip.Base, chip.Lines)
	if err != nil {
		t.Fatal(err)
	}
	got := ""
	for _, e := range vmsim.Levels(evs, chip.Base+3) {
		got += fmt.Sprint(e.Value)
	}
	// Out switches the fresh line to output (driving 0), then writes each level.
	if got != "0101" {
		t.Errorf("levels traced on line 3: %q, want \"0101\" (events %v)", got, evs)
	}
}

func TestVMULEDSReportsBrightness(t *testing.T) {
	led, err := vmsim.NewLED("c2d-selftest", 255)
	if err != nil {
		t.Fatal(err)
	}
	defer led.Close()
	for _, b := range []int32{255, 0, 17} {
		if err := os.WriteFile("/sys/class/leds/c2d-selftest/brightness", []byte(fmt.Sprint(b)), 0); err != nil {
			t.Fatal(err)
		}
		ev, err := led.Next(2 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if ev.Brightness != b {
			t.Fatalf("uleds reported %d after writing %d", ev.Brightness, b)
		}
	}
}
