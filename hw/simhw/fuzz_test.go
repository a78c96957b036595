package simhw_test

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/c2d-project/c2d/hw/simhw"
)

// Whatever the bytes, parsing never panics, and what parses survives a round trip.
func FuzzParseTransitions(f *testing.F) {
	f.Add([]byte(`{"seq":1,"time":"2026-11-25T21:50:00.123Z","output":"relay1","on":true,"cause":"set"}` + "\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		ts, err := simhw.ParseTransitions(data)
		if err != nil {
			return
		}
		var again []byte
		for _, tr := range ts {
			line, err := json.Marshal(tr)
			if err != nil {
				t.Fatal(err)
			}
			again = append(append(again, line...), '\n')
		}
		ts2, err := simhw.ParseTransitions(again)
		if err != nil || len(ts2) != len(ts) {
			t.Fatalf("round trip: %v, %d vs %d lines", err, len(ts2), len(ts))
		}
		for i := range ts {
			if !ts[i].Time.Equal(ts2[i].Time) || ts[i].Seq != ts2[i].Seq || ts[i].Output != ts2[i].Output || ts[i].On != ts2[i].On || ts[i].Cause != ts2[i].Cause {
				t.Fatalf("line %d: %+v became %+v", i, ts[i], ts2[i])
			}
		}
	})
}

func FuzzParseState(f *testing.F) {
	f.Add([]byte(`{"updated":"2026-11-25T21:50:00Z","seq":2,"closed":false,"outputs":{"a":{"on":true,"safe":false,"kind":"gpio","pin":"GPIO17","level":"high","changes":1}}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := simhw.ParseState(data)
		if err != nil {
			return
		}
		b, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		s2, err := simhw.ParseState(b)
		if err != nil {
			t.Fatalf("round trip: %v", err)
		}
		if !s.Updated.Equal(s2.Updated) || s.Seq != s2.Seq || !reflect.DeepEqual(s.Outputs, s2.Outputs) {
			t.Fatalf("round trip changed %+v into %+v", s, s2)
		}
	})
}

// Whatever the bytes, ParseInputs never panics, and what it accepts holds only on and off.
func FuzzParseInputs(f *testing.F) {
	f.Add([]byte(`{"door": "on", "pir": "off"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		states, err := simhw.ParseInputs(data)
		if err != nil {
			return
		}
		for n, v := range states {
			if v != "on" && v != "off" {
				t.Fatalf("%s accepted as %q", n, v)
			}
		}
	})
}
