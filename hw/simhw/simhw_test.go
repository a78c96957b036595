package simhw_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/c2d-project/c2d/hw"
	"github.com/c2d-project/c2d/hw/simhw"
)

var specs = []hw.OutputSpec{
	{Name: "relay1", Kind: hw.KindGPIO, Pin: "GPIO17", Line: -1, ActiveLow: true},
	{Name: "fan", Kind: hw.KindGPIO, Chip: "pinctrl-rp1", Line: 5, Safe: true},
	{Name: "act", Kind: hw.KindLED, LED: "ACT"},
}

func paths(t *testing.T) (string, string) {
	dir := t.TempDir()
	return filepath.Join(dir, "run", "state.json"), filepath.Join(dir, "transitions.jsonl")
}

func mustState(t *testing.T, path string) simhw.State {
	t.Helper()
	s, err := simhw.ReadState(path)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustLog(t *testing.T, path string) []simhw.Transition {
	t.Helper()
	ts, err := simhw.ReadTransitions(path)
	if err != nil {
		t.Fatal(err)
	}
	return ts
}

func summary(ts []simhw.Transition) string {
	var parts []string
	for _, tr := range ts {
		parts = append(parts, fmt.Sprintf("%d:%s=%v/%s", tr.Seq, tr.Output, tr.On, tr.Cause))
	}
	return strings.Join(parts, " ")
}

func TestStateFileAndLog(t *testing.T) {
	state, log := paths(t)
	b, err := simhw.Open(specs, simhw.Options{StateFile: state, TransitionLog: log})
	if err != nil {
		t.Fatal(err)
	}
	s := mustState(t, state)
	if s.Closed || s.Seq != 3 || len(s.Outputs) != 3 {
		t.Fatalf("state after Open: %+v", s)
	}
	r := s.Outputs["relay1"]
	if r.On || r.Safe || r.Kind != hw.KindGPIO || r.Pin != "GPIO17" || !r.ActiveLow || r.Level != "high" || r.Changes != 0 || r.Line != nil {
		t.Errorf("relay1 after Open: %+v", r)
	}
	f := s.Outputs["fan"]
	if !f.On || f.Chip != "pinctrl-rp1" || f.Line == nil || *f.Line != 5 || f.Level != "high" {
		t.Errorf("fan after Open: %+v", f)
	}
	if a := s.Outputs["act"]; a.Kind != hw.KindLED || a.LED != "ACT" || a.On {
		t.Errorf("act after Open: %+v", a)
	}
	if got, want := summary(mustLog(t, log)), "1:relay1=false/open 2:fan=true/open 3:act=false/open"; got != want {
		t.Fatalf("log after Open: %s, want %s", got, want)
	}

	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(b.Output("relay1").Set(true))
	must(b.Output("relay1").Set(true)) // no change: nothing written
	must(b.Output("act").Set(true))
	must(b.Output("relay1").Set(false))
	must(b.Output("relay1").Set(true))
	s = mustState(t, state)
	if r := s.Outputs["relay1"]; !r.On || r.Level != "low" || r.Changes != 3 || s.Seq != 7 {
		t.Errorf("relay1 after 3 changes: %+v (seq %d)", r, s.Seq)
	}
	ts := mustLog(t, log)
	if got, want := summary(ts[3:]), "4:relay1=true/set 5:act=true/set 6:relay1=false/set 7:relay1=true/set"; got != want {
		t.Fatalf("log: %s, want %s", got, want)
	}
	for i := 1; i < len(ts); i++ {
		if ts[i].Time.Before(ts[i-1].Time) {
			t.Errorf("time goes backwards at seq %d", ts[i].Seq)
		}
	}

	must(b.Close())
	s = mustState(t, state)
	if !s.Closed || s.Outputs["relay1"].On || s.Outputs["act"].On || !s.Outputs["fan"].On {
		t.Fatalf("state after Close: %+v", s)
	}
	if got, want := summary(mustLog(t, log)[7:]), "8:relay1=false/close 9:act=false/close"; got != want {
		t.Fatalf("log after Close: %s, want %s", got, want)
	}
	if err := b.Output("fan").Set(false); !errors.Is(err, hw.ErrClosed) {
		t.Fatalf("Set after Close: %v", err)
	}
	if !errors.Is(b.Healthy(), hw.ErrClosed) {
		t.Fatalf("Healthy after Close: %v", b.Healthy())
	}

	// A restart continues seq and logs the safe-state drive again.
	b2, err := simhw.Open(specs, simhw.Options{StateFile: state, TransitionLog: log})
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	if got, want := summary(mustLog(t, log)[9:]), "10:relay1=false/open 11:fan=true/open 12:act=false/open"; got != want {
		t.Fatalf("log after restart: %s, want %s", got, want)
	}
	if s := mustState(t, state); s.Closed || s.Seq != 12 {
		t.Fatalf("state after restart: %+v", s)
	}
	entries, _ := os.ReadDir(filepath.Dir(state))
	if len(entries) != 1 {
		t.Errorf("temporary files left beside the state file: %v", entries)
	}
}

// A reader polling the state file while outputs change never sees a partial or invalid file.
func TestStateFileAtomic(t *testing.T) {
	state, _ := paths(t)
	b, err := simhw.OpenBoard(specs, simhw.Options{StateFile: state})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	var (
		stop  atomic.Bool
		reads atomic.Int64
		wg    sync.WaitGroup
		bad   = make(chan error, 1)
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		var last uint64
		for !stop.Load() || reads.Load() == 0 {
			s, err := simhw.ReadState(state)
			if err == nil && s.Seq < last {
				err = fmt.Errorf("seq went back from %d to %d", last, s.Seq)
			}
			if err != nil {
				bad <- err
				return
			}
			last = s.Seq
			reads.Add(1)
		}
	}()
	const n = 1000
	for i := 0; i < n; i++ {
		if err := b.Output("relay1").Set(i%2 == 0); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	select {
	case err := <-bad:
		t.Fatalf("reader saw a bad state file after %d good reads: %v", reads.Load(), err)
	default:
	}
	if s := mustState(t, state); s.Outputs["relay1"].Changes != n {
		t.Fatalf("changes = %d, want %d", s.Outputs["relay1"].Changes, n)
	}
	t.Logf("%d concurrent reads, all complete", reads.Load())
}

func TestConcurrentSetsKeepLogAndStateConsistent(t *testing.T) {
	state, log := paths(t)
	b, err := simhw.Open(specs, simhw.Options{StateFile: state, TransitionLog: log, Sync: true})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, name := range []string{"relay1", "fan", "act"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				_ = b.Output(name).Set(i%2 == 0)
			}
		}()
	}
	wg.Wait()
	s := mustState(t, state)
	ts := mustLog(t, log)
	if uint64(len(ts)) != s.Seq {
		t.Fatalf("log has %d lines, state seq %d", len(ts), s.Seq)
	}
	last := map[string]bool{}
	for i, tr := range ts {
		if tr.Seq != uint64(i+1) {
			t.Fatalf("line %d has seq %d", i+1, tr.Seq)
		}
		if prev, seen := last[tr.Output]; seen && prev == tr.On {
			t.Fatalf("seq %d: %s logged %v twice in a row", tr.Seq, tr.Output, tr.On)
		}
		last[tr.Output] = tr.On
	}
	for name, on := range last {
		if s.Outputs[name].On != on || b.Output(name).State() != on {
			t.Errorf("%s: log ends %v, state file %v, State() %v", name, on, s.Outputs[name].On, b.Output(name).State())
		}
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestFailNext(t *testing.T) {
	state, log := paths(t)
	b, err := simhw.OpenBoard(specs, simhw.Options{StateFile: state, TransitionLog: log, FailNext: map[string]int{"relay1": 1}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	var te *hw.TransientError
	if err := b.Output("relay1").Set(true); !errors.As(err, &te) || !errors.Is(err, simhw.ErrInjected) {
		t.Fatalf("first Set: %v, want injected transient error", err)
	}
	if b.Output("relay1").State() || mustState(t, state).Outputs["relay1"].On || len(mustLog(t, log)) != 3 {
		t.Fatal("a failed Set changed something")
	}
	if err := b.Output("relay1").Set(true); err != nil {
		t.Fatal(err)
	}
	b.FailNext("act", 2)
	for i := 0; i < 2; i++ {
		if err := b.Output("act").Set(true); !errors.As(err, &te) {
			t.Fatalf("act Set %d: %v", i, err)
		}
	}
	if err := b.Output("act").Set(true); err != nil {
		t.Fatal(err)
	}
	if b.Healthy() != nil {
		t.Fatalf("injected failures made the board unhealthy: %v", b.Healthy())
	}
	if _, err := simhw.Open(specs, simhw.Options{FailNext: map[string]int{"nope": 1}}); err == nil {
		t.Fatal("FailNext naming an unknown output accepted")
	}
}

// The state file is the simulated hardware: when it cannot be written, Set fails, nothing
// changes, and the board is unhealthy until a write succeeds again.
func TestStateFileWriteFailure(t *testing.T) {
	state, _ := paths(t)
	b, err := simhw.Open(specs, simhw.Options{StateFile: state})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	dir := filepath.Dir(state)
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := b.Output("relay1").Set(true); err == nil || !strings.Contains(err.Error(), "relay1: simhw: state file") {
		t.Fatalf("Set with the directory gone: %v", err)
	}
	if b.Output("relay1").State() {
		t.Fatal("State changed although the state file was not written")
	}
	if b.Healthy() == nil {
		t.Fatal("healthy although the state file cannot be written")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := b.Output("relay1").Set(true); err != nil || b.Healthy() != nil {
		t.Fatalf("after the directory came back: Set %v, Healthy %v", err, b.Healthy())
	}
}

func TestUnwritableLogFailsOpen(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full")
	}
	_, err := simhw.Open(specs, simhw.Options{TransitionLog: "/dev/full"})
	if err == nil || !strings.Contains(err.Error(), "simhw: transition log: ") {
		t.Fatalf("Open with a full log device: %v", err)
	}
}

func TestValidation(t *testing.T) {
	tests := []struct {
		name  string
		specs []hw.OutputSpec
		want  string
	}{
		{"duplicate name", []hw.OutputSpec{specs[0], specs[0]}, `relay1.name: output "relay1" declared twice`},
		{"shared pin", []hw.OutputSpec{specs[0], {Name: "b", Kind: hw.KindGPIO, Pin: "GPIO17", Line: -1}}, `b.pin: gpio GPIO17 is already used by output "relay1"`},
		{"shared LED", []hw.OutputSpec{specs[2], {Name: "b", Kind: hw.KindLED, LED: "ACT"}}, `b.led: led ACT is already used by output "act"`},
		{"no pin", []hw.OutputSpec{{Name: "a", Kind: hw.KindGPIO, Line: -1}}, `a.pin: no pin, and no chip and line, given`},
		{"no LED", []hw.OutputSpec{{Name: "a", Kind: hw.KindLED}}, `a.led: no LED name given`},
		{"bad kind", []hw.OutputSpec{{Name: "a", Kind: "servo"}}, `a.kind: unknown kind "servo" (want "gpio" or "led")`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := simhw.Open(tc.specs, simhw.Options{})
			var oe *hw.OutputError
			if err == nil || err.Error() != tc.want || !errors.As(err, &oe) {
				t.Fatalf("err = %v, want %s", err, tc.want)
			}
		})
	}
}

func TestParseTransitions(t *testing.T) {
	good := `{"seq":1,"time":"2026-11-25T21:50:00Z","output":"a","on":false,"cause":"open"}` + "\n"
	ts, err := simhw.ParseTransitions([]byte(good + `{"seq":2,"time":"2026-11-25T21:5`))
	if err != nil || len(ts) != 1 || ts[0].Output != "a" {
		t.Fatalf("partial last line: %v %v", ts, err)
	}
	if _, err := simhw.ParseTransitions([]byte(good + "{nope}\n")); err == nil || !strings.HasPrefix(err.Error(), "line 2: ") {
		t.Fatalf("malformed line: %v", err)
	}
	if _, err := simhw.ParseTransitions([]byte(`{"seq":1,"time":"2026-11-25T21:50:00Z","output":"a","on":true,"cause":"set","x":1}` + "\n")); err == nil {
		t.Fatal("unknown field accepted")
	}
	if _, err := simhw.ParseState([]byte(`{"updated":"2026-11-25T21:50:00Z","seq":1,"closed":false}`)); err == nil {
		t.Fatal("state without outputs accepted")
	}
}

// Baselines in the same run: in-memory, state file, state file + log, and with fsync.
func BenchmarkSet(b *testing.B) {
	dir := b.TempDir()
	for _, bc := range []struct {
		name string
		opts simhw.Options
	}{
		{"memory", simhw.Options{}},
		{"statefile", simhw.Options{StateFile: filepath.Join(dir, "s1.json")}},
		{"statefile+log", simhw.Options{StateFile: filepath.Join(dir, "s2.json"), TransitionLog: filepath.Join(dir, "l2.jsonl")}},
		{"statefile+log+sync", simhw.Options{StateFile: filepath.Join(dir, "s3.json"), TransitionLog: filepath.Join(dir, "l3.jsonl"), Sync: true}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			board, err := simhw.Open(specs, bc.opts)
			if err != nil {
				b.Fatal(err)
			}
			defer board.Close()
			out := board.Output("relay1")
			on := false
			for b.Loop() {
				on = !on
				if err := out.Set(on); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
