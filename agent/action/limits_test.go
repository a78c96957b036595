package action

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// limitsCatalog has one output of each timed kind with round limits, so the boundaries below are
// written out by hand.
func limitsCatalog() *Catalog {
	return &Catalog{Outputs: []Rules{
		{Name: "relay", Actions: []Kind{Pulse}, MaxDuration: 48 * time.Hour, MaxCount: 10, MinInterval: 100 * time.Millisecond, CompleteOn: CompleteOnFinish},
		{Name: "led", Actions: []Kind{Blink}, MaxDuration: time.Hour, MaxCount: 10, MinInterval: 100 * time.Millisecond, CompleteOn: CompleteOnFinish},
	}}
}

func limitsMsg(kv ...string) *iothub.Message {
	m := &iothub.Message{MessageID: "m"}
	for i := 0; i+1 < len(kv); i += 2 {
		m.Properties = append(m.Properties, iothub.AppProperty{Name: kv[i], Value: kv[i+1]})
	}
	return m
}

// min_interval is the shortest time allowed: a value equal to it is accepted, 1 ms less is not.
func TestOnOffExactlyMinIntervalAccepted(t *testing.T) {
	cat := limitsCatalog()
	for _, tc := range []struct {
		props []string
		ok    bool
	}{
		{[]string{"on", "100ms", "off", "100ms"}, true},
		{[]string{"on", "100", "off", "100"}, true},
		{[]string{"interval", "100ms"}, true},
		{[]string{"on", "99ms"}, false},
		{[]string{"off", "99"}, false},
		{[]string{"interval", "99ms"}, false},
	} {
		props := append([]string{"target", "led", "action", "blink"}, tc.props...)
		_, err := cat.Decode(limitsMsg(props...), time.Time{})
		if (err == nil) != tc.ok {
			t.Errorf("blink %v: error %v, want accepted=%v", tc.props, err, tc.ok)
		}
	}
	for _, tc := range []struct {
		d  string
		ok bool
	}{{"100ms", true}, {"100", true}, {"99ms", false}, {"99999us", false}} {
		_, err := cat.Decode(limitsMsg("target", "relay", "action", "pulse", "duration", tc.d), time.Time{})
		if (err == nil) != tc.ok {
			t.Errorf("pulse for %s: error %v, want accepted=%v", tc.d, err, tc.ok)
		}
	}
}

// A whole number of milliseconds is at most 24 h; above it is refused, not wrapped or capped,
// even where the output's max_duration would allow more (written as Go syntax it is allowed).
func TestWholeMillisecondsAbove24hRefused(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"1":        time.Millisecond,
		"86400000": 24 * time.Hour,
		"86399999": 24*time.Hour - time.Millisecond,
	} {
		if d, err := ParseDuration(in); err != nil || d != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, d, err, want)
		}
	}
	for _, in := range []string{"86400001", "172800000", "9223372036854775807", "9223372036854775808", "99999999999999999999"} {
		if d, err := ParseDuration(in); err == nil {
			t.Errorf("ParseDuration(%q) = %v, want an error", in, d)
		}
	}
	cat := limitsCatalog()
	if _, err := cat.Decode(limitsMsg("target", "relay", "action", "pulse", "duration", "86400001"), time.Time{}); err == nil {
		t.Error("pulse for 86400001 ms accepted")
	}
	if p, err := cat.Decode(limitsMsg("target", "relay", "action", "pulse", "duration", "25h"), time.Time{}); err != nil || p.Steps[0].Duration != 25*time.Hour {
		t.Errorf("pulse for 25h within max_duration 48h: %+v, %v", p, err)
	}
}

// Zero is no duration, however it is written.
func TestZeroDurationRefused(t *testing.T) {
	for _, in := range []string{"0s", "0", "0ms", "00", "-1s", "0h0m0s", ""} {
		if d, err := ParseDuration(in); err == nil {
			t.Errorf("ParseDuration(%q) = %v, want an error", in, d)
		}
	}
	for in, want := range map[string]time.Duration{"1ns": 1, "0.5s": 500 * time.Millisecond, "01": time.Millisecond} {
		if d, err := ParseDuration(in); err != nil || d != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, d, err, want)
		}
	}
	cat := limitsCatalog()
	if _, err := cat.Decode(limitsMsg("target", "relay", "action", "pulse", "duration", "0s"), time.Time{}); err == nil {
		t.Error(`pulse for "0s" accepted`)
	}
}

// A message with neither target, action nor command asks for nothing: it is refused with the
// properties it should have set.
func TestMessageWithoutTargetActionOrCommandRefused(t *testing.T) {
	_, err := limitsCatalog().Decode(limitsMsg(), time.Time{})
	var r *Rejection
	if !errors.As(err, &r) || !strings.Contains(r.Reason, "nothing to do") {
		t.Fatalf("Decode(no target, action or command) = %v, want a rejection saying there is nothing to do", err)
	}
}

// A blink's count is at least 1: "1" is accepted, "0" is not.
func TestBlinkCountOfOneAccepted(t *testing.T) {
	cat := limitsCatalog()
	p, err := cat.Decode(limitsMsg("target", "led", "action", "blink", "count", "1"), time.Time{})
	if err != nil || p.Steps[0].Count != 1 {
		t.Fatalf("count 1: %+v, %v", p, err)
	}
	if _, err := cat.Decode(limitsMsg("target", "led", "action", "blink", "count", "0"), time.Time{}); err == nil {
		t.Fatal("count 0 accepted")
	}
}

// A plan's targets are the outputs it moves, each once, in order of first use; a wait has none.
func TestPlanTargetsEachOutputOnce(t *testing.T) {
	p := NewPlan("m", "c", []Step{
		{Action: On, Target: "relay"},
		{Action: Wait, Duration: time.Second},
		{Action: Pulse, Target: "led", Duration: time.Second},
		{Action: Off, Target: "relay"},
	}, CompleteOnFinish, time.Time{})
	if got := strings.Join(p.Targets, ","); got != "relay,led" {
		t.Fatalf("targets %q, want relay,led", got)
	}
}
