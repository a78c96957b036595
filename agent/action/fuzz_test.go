package action

import (
	"math"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// The planner's safety property, stated without the planner's own arithmetic: every number a
// message carries is re-read here with exact (math/big) arithmetic, and an accepted plan's
// worst-case busy time, recomputed exactly from those numbers, must be within its output's
// max_duration. Nothing may parse to a negative time or to one that differs from what the text
// says (a wrapped value). Issue #17: "count=1;interval=2562047h" wrapped on + off negative and
// passed the limit.

// fuzzCatalog is testCatalog plus an output whose limits are as loose as a config allows, so that
// only arithmetic stands between a message and the limit.
func fuzzCatalog() *Catalog {
	c := testCatalog()
	c.Outputs = append(c.Outputs, Rules{
		Name: "buzzer", Actions: []Kind{On, Off, Blink, Pulse}, MaxDuration: 1000 * time.Hour,
		MaxCount: math.MaxInt, MinInterval: time.Nanosecond, CompleteOn: CompleteOnFinish,
	})
	c.Commands = append(c.Commands, Command{Name: "long", Steps: []Step{
		{Action: Wait, Duration: maxDuration}, {Action: Pulse, Target: "buzzer", Duration: time.Hour},
	}})
	return c
}

// exactNanos reads a duration property value exactly: whole milliseconds, or Go's syntax
// ([-+] then number+unit pairs) as a rational number of nanoseconds. terms is how many
// number+unit pairs there were (time.ParseDuration truncates each to whole nanoseconds).
func exactNanos(s string) (v *big.Rat, terms int, ok bool) {
	units := map[string]int64{"ns": 1, "us": 1e3, "µs": 1e3, "μs": 1e3, "ms": 1e6, "s": 1e9, "m": 60e9, "h": 3600e9}
	if s != "" && strings.Trim(s, "0123456789") == "" {
		n, _ := new(big.Int).SetString(s, 10)
		return new(big.Rat).SetInt(n.Mul(n, big.NewInt(1e6))), 1, true
	}
	neg := false
	if s != "" && (s[0] == '-' || s[0] == '+') {
		neg, s = s[0] == '-', s[1:]
	}
	if s == "" {
		return nil, 0, false
	}
	v = new(big.Rat)
	for s != "" {
		i := 0
		for i < len(s) && (s[i] >= '0' && s[i] <= '9' || s[i] == '.') {
			i++
		}
		num := s[:i]
		if strings.Count(num, ".") > 1 || strings.Trim(num, ".") == "" {
			return nil, 0, false
		}
		j := i
		for j < len(s) && !(s[j] >= '0' && s[j] <= '9' || s[j] == '.') {
			j++
		}
		unit, known := units[s[i:j]]
		if !known {
			return nil, 0, false
		}
		if strings.HasPrefix(num, ".") {
			num = "0" + num
		}
		num = strings.TrimSuffix(num, ".")
		r, good := new(big.Rat).SetString(num)
		if !good {
			return nil, 0, false
		}
		v.Add(v, r.Mul(r, new(big.Rat).SetInt64(unit)))
		terms++
		s = s[j:]
	}
	if neg {
		v.Neg(v)
	}
	return v, terms, true
}

// sameTime reports whether d is what the text said: exact up to the truncation to whole
// nanoseconds of each of its terms.
func sameTime(d time.Duration, raw string) bool {
	want, terms, ok := exactNanos(raw)
	if !ok {
		return false
	}
	diff := new(big.Rat).Sub(want, new(big.Rat).SetInt64(int64(d)))
	return diff.Sign() >= 0 && diff.Cmp(new(big.Rat).SetInt64(int64(terms))) <= 0
}

func bigDur(d time.Duration) *big.Int { return big.NewInt(int64(d)) }

// exactBusy is a step's busy time in exact arithmetic.
func exactBusy(s Step) *big.Int {
	switch s.Action {
	case Blink:
		cycle := new(big.Int).Add(bigDur(s.On), bigDur(s.Off))
		return cycle.Mul(cycle, big.NewInt(int64(s.Count)))
	case Pulse, Wait:
		return bigDur(s.Duration)
	}
	return new(big.Int)
}

// FuzzDecode: whatever the properties, Decode either rejects with a one-line reason or returns a
// plan within the output's rules, whose numbers are exactly those of the message and whose
// worst-case time, computed exactly, is within max_duration; Busy never wraps.
func FuzzDecode(f *testing.F) {
	f.Add("target=relay1&action=pulse&duration=2s")
	f.Add("target=act&action=blink&count=5&on=100&off=1.5s")
	f.Add("command=identify")
	f.Add("target=act&action=blink&interval=20ms&count=50")
	f.Add("target&action=on")
	f.Add("x-a=1&target=relay1&action=off")
	f.Add("target=buzzer&action=blink&count=1&interval=2562047h")
	f.Add("target=buzzer&action=blink&count=9223372036854775807&interval=1h")
	f.Add("target=buzzer&action=blink&count=4611686018427387904&on=1ns&off=1ns")
	f.Add("command=long")
	cat := fuzzCatalog()
	f.Fuzz(func(t *testing.T, bag string) {
		b, err := iothub.DecodePropertyBag(bag)
		if err != nil {
			return
		}
		m, err := iothub.MessageFromBag(b)
		if err != nil {
			return
		}
		p, err := cat.Decode(m, now)
		if err != nil {
			rej, ok := err.(*Rejection)
			if !ok || rej.Reason == "" || strings.ContainsAny(rej.Reason, "\n\r") {
				t.Fatalf("bad rejection %T %q", err, err)
			}
			return
		}
		// Plan.Busy: the exact sum of the steps, clamped at the largest duration, never below.
		sum := new(big.Int)
		for _, s := range p.Steps {
			if got, want := s.Busy(), exactBusy(s); want.IsInt64() && bigDur(got).Cmp(want) != 0 || !want.IsInt64() && got != maxDuration {
				t.Fatalf("step %v: Busy %v, exactly %s ns", s, got, want)
			}
			sum.Add(sum, exactBusy(s))
		}
		if got := p.Busy(); sum.IsInt64() && bigDur(got).Cmp(sum) != 0 || !sum.IsInt64() && got != maxDuration {
			t.Fatalf("plan %v: Busy %v, exactly %s ns", p, got, sum)
		}
		if p.Command != "" {
			return
		}
		props := map[string]string{}
		for _, pr := range m.Properties {
			props[pr.Name] = pr.Value
		}
		s := p.Steps[0]
		r := cat.output(s.Target)
		if r == nil || !r.Allows(s.Action) || s.Target != props[PropTarget] {
			t.Fatalf("plan %v escapes the catalog", p)
		}
		if exactBusy(s).Cmp(bigDur(r.MaxDuration)) > 0 {
			t.Fatalf("plan %v runs %s ns exactly, beyond %s's max_duration %v", p, exactBusy(s), r.Name, r.MaxDuration)
		}
		switch s.Action {
		case Blink:
			count, want := big.NewInt(DefaultBlinkCount), ""
			if raw, ok := props[PropCount]; ok {
				count, _ = new(big.Int).SetString(raw, 10)
				want = raw
			}
			if count == nil || count.Cmp(big.NewInt(int64(s.Count))) != 0 || s.Count < 1 || s.Count > r.MaxCount {
				t.Fatalf("plan %v: count %d, message said %q", p, s.Count, want)
			}
			for _, x := range []struct {
				name string
				d    time.Duration
			}{{PropOn, s.On}, {PropOff, s.Off}} {
				raw, ok := props[x.name]
				if !ok {
					raw, ok = props[PropInterval]
				}
				if !ok {
					raw = "500ms"
				}
				if x.d < r.MinInterval || !sameTime(x.d, raw) {
					t.Fatalf("plan %v: %s %v, message said %q", p, x.name, x.d, raw)
				}
			}
		case Pulse:
			if raw := props[PropDuration]; s.Duration < r.MinInterval || !sameTime(s.Duration, raw) {
				t.Fatalf("plan %v: duration %v, message said %q", p, s.Duration, raw)
			}
		}
	})
}

// FuzzParseDuration: an accepted value is positive and exactly what the text says; a well-formed
// value between 1 ms and 24 h is accepted; a refusal of a well-formed positive value beyond a
// time.Duration says "too large".
func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"250ms", "1.5s", "250", "2562047h", "2562048h", "-1s", "0", ".5s", "1h2m3.5s", "99999999999999999999", "86400001", "9223372036854775807ns", "9223372036854775808ns"} {
		f.Add(s)
	}
	maxNs := new(big.Rat).SetInt64(math.MaxInt64)
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDuration(s)
		exact, _, wellFormed := exactNanos(s)
		if err == nil {
			if d <= 0 || !sameTime(d, s) {
				t.Fatalf("ParseDuration(%q) = %v (%d ns), not what it says", s, d, int64(d))
			}
			return
		}
		if strings.ContainsAny(err.Error(), "\n\r") {
			t.Fatalf("ParseDuration(%q): multi-line error %q", s, err)
		}
		if !wellFormed {
			return
		}
		if exact.Cmp(new(big.Rat).SetInt64(int64(time.Millisecond))) >= 0 && exact.Cmp(new(big.Rat).SetInt64(int64(24*time.Hour))) <= 0 {
			t.Fatalf("ParseDuration(%q) refused a value of %s ns: %v", s, exact.FloatString(0), err)
		}
		if exact.Cmp(maxNs) > 0 && !strings.Contains(err.Error(), "too large") {
			t.Fatalf("ParseDuration(%q) of %s ns: %v, want \"too large\"", s, exact.FloatString(0), err)
		}
	})
}
