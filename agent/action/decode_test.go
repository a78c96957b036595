package action

import (
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
)

func testCatalog() *Catalog {
	return &Catalog{
		Outputs: []Rules{
			{Name: "relay1", Actions: []Kind{On, Off, Pulse}, MaxDuration: 30 * time.Second, MaxCount: 100, MinInterval: 200 * time.Millisecond, CompleteOn: CompleteOnFinish},
			{Name: "act", Actions: []Kind{On, Off, Toggle, Blink}, MaxDuration: 10 * time.Second, MaxCount: 50, MinInterval: 20 * time.Millisecond, CompleteOn: CompleteOnStart},
		},
		Commands: []Command{
			{Name: "identify", Steps: []Step{{Action: Blink, Target: "act", Count: 10, On: 200 * time.Millisecond, Off: 200 * time.Millisecond}}, CompleteOn: CompleteOnFinish},
		},
	}
}

func msg(kv ...string) *iothub.Message {
	m := &iothub.Message{MessageID: "m1"}
	for i := 0; i+1 < len(kv); i += 2 {
		m.Properties = append(m.Properties, iothub.AppProperty{Name: kv[i], Value: kv[i+1]})
	}
	return m
}

var now = time.Date(2026, 11, 25, 22, 0, 0, 0, time.UTC)

func TestDecodeAccepted(t *testing.T) {
	cat := testCatalog()
	ms := time.Millisecond
	tests := []struct {
		name string
		m    *iothub.Message
		want string // Plan.String()
		step Step
	}{
		{"on", msg("target", "relay1", "action", "on"), "on relay1", Step{Action: On, Target: "relay1"}},
		{"off", msg("action", "off", "target", "relay1"), "off relay1", Step{Action: Off, Target: "relay1"}},
		{"toggle", msg("target", "act", "action", "toggle"), "toggle act", Step{Action: Toggle, Target: "act"}},
		{"blink defaults", msg("target", "act", "action", "blink"), "blink act 1× (500ms on, 500ms off)", Step{Action: Blink, Target: "act", Count: 1, On: 500 * ms, Off: 500 * ms}},
		{"blink interval", msg("target", "act", "action", "blink", "count", "5", "interval", "100ms"), "blink act 5× (100ms on, 100ms off)", Step{Action: Blink, Target: "act", Count: 5, On: 100 * ms, Off: 100 * ms}},
		{"blink on/off ms", msg("target", "act", "action", "blink", "count", "3", "on", "250", "off", "1.5s"), "blink act 3× (250ms on, 1.5s off)", Step{Action: Blink, Target: "act", Count: 3, On: 250 * ms, Off: 1500 * ms}},
		{"blink only on", msg("target", "act", "action", "blink", "on", "50ms"), "blink act 1× (50ms on, 500ms off)", Step{Action: Blink, Target: "act", Count: 1, On: 50 * ms, Off: 500 * ms}},
		{"blink max exactly", msg("target", "act", "action", "blink", "count", "50", "interval", "100ms"), "blink act 50× (100ms on, 100ms off)", Step{Action: Blink, Target: "act", Count: 50, On: 100 * ms, Off: 100 * ms}},
		{"pulse", msg("target", "relay1", "action", "pulse", "duration", "2s"), "pulse relay1 for 2s", Step{Action: Pulse, Target: "relay1", Duration: 2 * time.Second}},
		{"pulse ms", msg("target", "relay1", "action", "pulse", "duration", "30000"), "pulse relay1 for 30s", Step{Action: Pulse, Target: "relay1", Duration: 30 * time.Second}},
		{"metadata ignored", msg("x-trace-id", "abc", "target", "relay1", "X-Sent-By", "ops", "action", "on"), "on relay1", Step{Action: On, Target: "relay1"}},
		{"command", msg("command", "identify"), "command identify: blink act 10× (200ms on, 200ms off)", Step{Action: Blink, Target: "act", Count: 10, On: 200 * ms, Off: 200 * ms}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := cat.Decode(tt.m, now)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if got := p.String(); got != tt.want {
				t.Errorf("plan = %q, want %q", got, tt.want)
			}
			if p.Steps[0] != tt.step {
				t.Errorf("step = %+v, want %+v", p.Steps[0], tt.step)
			}
			if p.MessageID != "m1" {
				t.Errorf("MessageID = %q", p.MessageID)
			}
		})
	}
}

func TestDecodeCompleteOnAndTargets(t *testing.T) {
	cat := testCatalog()
	p, err := cat.Decode(msg("target", "act", "action", "on"), now)
	if err != nil {
		t.Fatal(err)
	}
	if p.CompleteOn != CompleteOnStart || len(p.Targets) != 1 || p.Targets[0] != "act" {
		t.Errorf("plan %+v: want complete_on start, targets [act]", p)
	}
	p, err = cat.Decode(msg("command", "identify"), now)
	if err != nil {
		t.Fatal(err)
	}
	if p.Command != "identify" || p.CompleteOn != CompleteOnFinish {
		t.Errorf("plan %+v", p)
	}
}

func TestDecodeRejected(t *testing.T) {
	cat := testCatalog()
	expired := msg("target", "relay1", "action", "on")
	expired.ExpiryTime = now.Add(-time.Second)
	expiredNow := msg("target", "relay1", "action", "on")
	expiredNow.ExpiryTime = now
	tests := []struct {
		name   string
		m      *iothub.Message
		reason string
	}{
		{"expired", expired, "message expired at 2026-11-25T21:59:59Z"},
		{"expires at now", expiredNow, "message expired at 2026-11-25T22:00:00Z"},
		{"empty", msg(), `nothing to do: set properties "target" and "action", or "command"`},
		{"unknown target", msg("target", "relay9", "action", "on"), `unknown target "relay9" (declared: relay1, act)`},
		{"missing target", msg("action", "on"), `missing property "target"`},
		{"missing action", msg("target", "relay1"), `missing property "action"`},
		{"unknown action", msg("target", "relay1", "action", "flash"), `unknown action "flash" (actions: on, off, toggle, blink, pulse)`},
		{"action case", msg("target", "relay1", "action", "ON"), `unknown action "ON" (actions: on, off, toggle, blink, pulse)`},
		{"not allowed", msg("target", "relay1", "action", "blink"), `action "blink" not allowed on relay1 (allowed: on, off, pulse)`},
		{"pulse too long", msg("target", "relay1", "action", "pulse", "duration", "10m"), `duration 10m exceeds relay1's max_duration 30s`},
		{"pulse too long ms", msg("target", "relay1", "action", "pulse", "duration", "30001"), `duration 30.001s exceeds relay1's max_duration 30s`},
		{"pulse too short", msg("target", "relay1", "action", "pulse", "duration", "50ms"), `duration 50ms is below relay1's min_interval 200ms`},
		{"pulse no duration", msg("target", "relay1", "action", "pulse"), `missing property "duration" for action "pulse"`},
		{"pulse bad duration", msg("target", "relay1", "action", "pulse", "duration", "soon"), `malformed property "duration": "soon" is not a duration (e.g. 250ms, 1.5s, or whole milliseconds)`},
		{"pulse negative", msg("target", "relay1", "action", "pulse", "duration", "-1s"), `malformed property "duration": "-1s" is not positive`},
		{"pulse zero", msg("target", "relay1", "action", "pulse", "duration", "0"), `malformed property "duration": "0" is not positive`},
		{"count abc", msg("target", "act", "action", "blink", "count", "abc"), `malformed property "count": "abc" is not a whole number`},
		{"count negative", msg("target", "act", "action", "blink", "count", "-3"), `malformed property "count": "-3" is not a whole number`},
		{"count float", msg("target", "act", "action", "blink", "count", "2.5"), `malformed property "count": "2.5" is not a whole number`},
		{"count zero", msg("target", "act", "action", "blink", "count", "0"), `count 0 is below the minimum 1`},
		{"count too many", msg("target", "act", "action", "blink", "count", "51", "interval", "20ms"), `count 51 exceeds act's max_count 50`},
		{"count overflow", msg("target", "act", "action", "blink", "count", "99999999999999999999999"), `count 99999999999999999999999 exceeds act's max_count 50`},
		{"blink too long", msg("target", "act", "action", "blink", "count", "20", "interval", "1s"), `blink of 20 × (1s on + 1s off) = 40s exceeds act's max_duration 10s`},
		{"blink overflow", msg("target", "act", "action", "blink", "count", "1", "interval", "2562047h"), `blink of 1 × (2562047h on + 2562047h off) is too large: it exceeds act's max_duration 10s`},
		{"interval overflow", msg("target", "act", "action", "blink", "interval", "2562048h"), `malformed property "interval": "2562048h" is too large (at most 2562047h)`},
		{"pulse ms overflow", msg("target", "relay1", "action", "pulse", "duration", "99999999999999999999"), `malformed property "duration": "99999999999999999999" is too large (at most 86400000 ms)`},
		{"blink too fast", msg("target", "act", "action", "blink", "on", "5ms"), `on 5ms is below act's min_interval 20ms`},
		{"blink interval and on", msg("target", "act", "action", "blink", "interval", "100ms", "on", "100ms"), `property "interval" cannot be combined with "on" or "off"`},
		{"count on toggle", msg("target", "act", "action", "toggle", "count", "2"), `property "count" does not apply to action "toggle"`},
		{"duration on blink", msg("target", "act", "action", "blink", "duration", "2s"), `property "duration" does not apply to action "blink"`},
		{"interval on pulse", msg("target", "relay1", "action", "pulse", "duration", "1s", "interval", "1s"), `property "interval" does not apply to action "pulse"`},
		{"unknown property", msg("target", "relay1", "action", "on", "durration", "1s"), `unknown property "durration" (properties: target, action, count, interval, on, off, duration, command)`},
		{"property case", msg("Target", "relay1", "action", "on"), `unknown property "Target" (properties: target, action, count, interval, on, off, duration, command)`},
		{"duplicate", msg("target", "relay1", "target", "act", "action", "on"), `property "target" appears more than once`},
		{"empty value", msg("target", "", "action", "on"), `malformed property "target": empty value`},
		{"unknown command", msg("command", "dance"), `unknown command "dance" (declared: identify)`},
		{"command with target", msg("command", "identify", "target", "act"), `property "target" cannot be combined with "command"`},
		{"command with count", msg("count", "3", "command", "identify"), `property "count" cannot be combined with "command"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := cat.Decode(tt.m, now)
			if err == nil {
				t.Fatalf("accepted as %q, want rejection %q", p, tt.reason)
			}
			rej, ok := err.(*Rejection)
			if !ok {
				t.Fatalf("error %T %v is not a *Rejection", err, err)
			}
			if rej.Reason != tt.reason {
				t.Errorf("reason\n got: %s\nwant: %s", rej.Reason, tt.reason)
			}
		})
	}
}

func TestDecodeNoCommandsDeclared(t *testing.T) {
	cat := &Catalog{Outputs: testCatalog().Outputs}
	_, err := cat.Decode(msg("command", "identify"), now)
	if err == nil || err.Error() != `unknown command "identify" (declared: none)` {
		t.Fatalf("err = %v", err)
	}
}

func TestFormatDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		10 * time.Minute: "10m", time.Hour: "1h", 90 * time.Second: "1m30s", 250 * time.Millisecond: "250ms",
		1500 * time.Millisecond: "1.5s", 61 * time.Minute: "1h1m", time.Hour + time.Second: "1h0m1s",
	} {
		if got := FormatDuration(d); got != want {
			t.Errorf("FormatDuration(%v) = %q, want %q", d, got, want)
		}
	}
}
