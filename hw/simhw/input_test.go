package simhw_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/c2d-project/c2d/hw"
	"github.com/c2d-project/c2d/hw/simhw"
)

func nextEvent(t *testing.T, ch <-chan hw.InputEvent) hw.InputEvent {
	t.Helper()
	select {
	case e := <-ch:
		return e
	case <-time.After(5 * time.Second):
		t.Fatal("no input event within 5s")
		return hw.InputEvent{}
	}
}

// The simulated inputs follow the inputs file as it is replaced (WriteInputs) or written in place
// (a person with echo); a file that does not parse changes nothing and is reported by Err.
func TestSimInputsFollowFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "sub", "inputs.json")
	in, err := simhw.OpenInputs([]hw.InputSpec{{Name: "door", Pin: "GPIO22"}, {Name: "pir", Chip: "pinctrl-rp1", Line: 6}}, simhw.InputOptions{File: file})
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	ch := make(chan hw.InputEvent, 16)
	in.Notify(func(e hw.InputEvent) { ch <- e })
	if on, since := in.Input("door").State(); on || since.IsZero() {
		t.Fatalf("door before any file: %v %v", on, since)
	}
	before := time.Now()
	if err := simhw.WriteInputs(file, map[string]bool{"door": true}); err != nil {
		t.Fatal(err)
	}
	if e := nextEvent(t, ch); e.Input != "door" || !e.On || e.At.Before(before) {
		t.Fatalf("event %+v", e)
	}
	if on, since := in.Input("door").State(); !on || since.Before(before) {
		t.Fatalf("door %v since %v", on, since)
	}
	// Written in place; door is unchanged (no event), pir turns on.
	if err := os.WriteFile(file, []byte(`{"door": "on", "pir": "on"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if e := nextEvent(t, ch); e.Input != "pir" || !e.On {
		t.Fatalf("event %+v", e)
	}
	if err := os.WriteFile(file, []byte(`{"door": "open"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for in.Err() == nil && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond) // the watcher is asynchronous and has no event for a bad file
	}
	if err := in.Err(); err == nil || !strings.Contains(err.Error(), `door: "open" is not on or off`) {
		t.Fatalf("Err = %v", err)
	}
	if on, _ := in.Input("door").State(); !on {
		t.Fatal("a bad file changed the door")
	}
	if err := simhw.WriteInputs(file, map[string]bool{"door": false, "pir": true}); err != nil {
		t.Fatal(err)
	}
	if e := nextEvent(t, ch); e.Input != "door" || e.On {
		t.Fatalf("event %+v", e)
	}
	if in.Err() != nil {
		t.Fatalf("Err after a good file: %v", in.Err())
	}
	if err := in.Close(); err != nil {
		t.Fatal(err)
	}
	if err := in.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestSimInputsStartFromFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "inputs.json")
	if err := simhw.WriteInputs(file, map[string]bool{"door": true}); err != nil {
		t.Fatal(err)
	}
	in, err := simhw.OpenInputs([]hw.InputSpec{{Name: "door", Pin: "GPIO22"}}, simhw.InputOptions{File: file})
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	if on, _ := in.Input("door").State(); !on {
		t.Fatal("door does not start from the file")
	}
	if _, err := simhw.OpenInputs([]hw.InputSpec{{Name: "door"}}, simhw.InputOptions{File: file}); err == nil || !strings.Contains(err.Error(), "door.pin") {
		t.Fatalf("spec without a line: %v", err)
	}
}
