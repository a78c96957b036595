package twin

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func mustParse(t *testing.T, s string) Object {
	t.Helper()
	o, err := Parse([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func js(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestMergeNullDeletesAndVersions(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 7, 0, 0, 0, time.UTC)
	d := New(t0)
	s := &d.Desired
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(s.Merge(mustParse(t, `{"outputs":{"relay1":"on","act":"off"},"rate":5}`), t0.Add(time.Second), "properties.desired", MaxSectionBytes))
	must(s.Merge(mustParse(t, `{"outputs":{"act":null},"rate":null,"big":9007199254740991e-10}`), t0.Add(2*time.Second), "properties.desired", MaxSectionBytes))
	if got := js(t, s.Plain()); got != `{"$version":3,"big":9007199254740991e-10,"outputs":{"relay1":"on"}}` {
		t.Fatalf("plain %s", got)
	}
	r := s.Render(true)
	md := r["$metadata"].(Object)
	relay := md["outputs"].(Object)["relay1"].(Object)
	// relay1 was last written by version 2 at t0+1s; the outputs object was touched again at t0+2s.
	if relay["$lastUpdated"] != "2026-12-03T07:00:01.0000000Z" || relay["$lastUpdatedVersion"] != int64(2) {
		t.Errorf("relay1 metadata %v", relay)
	}
	if o := md["outputs"].(Object); o["$lastUpdated"] != "2026-12-03T07:00:02.0000000Z" || o["act"] != nil {
		t.Errorf("outputs metadata %v", o)
	}
	if md["rate"] != nil || md["$lastUpdatedVersion"] != int64(3) {
		t.Errorf("root metadata %v", md)
	}
	// Reported metadata has no $lastUpdatedVersion.
	must(d.Reported.Merge(mustParse(t, `{"x":1}`), t0, "properties.reported", MaxSectionBytes))
	if m := d.Reported.Render(false)["$metadata"].(Object); m["$lastUpdatedVersion"] != nil || m["x"].(Object)["$lastUpdatedVersion"] != nil {
		t.Errorf("reported metadata %v", m)
	}
	// Replace drops what is not in the new document.
	must(s.Replace(mustParse(t, `{"only":true,"gone":null}`), t0, "properties.desired", MaxSectionBytes))
	if got := js(t, s.Plain()); got != `{"$version":4,"only":true}` {
		t.Fatalf("replaced %s", got)
	}
}

func TestValidateLimits(t *testing.T) {
	deep := `{"a":` + strings.Repeat(`{"a":`, MaxDepth) + `1` + strings.Repeat(`}`, MaxDepth+1)
	okDeep := `{"a":` + strings.Repeat(`{"a":`, MaxDepth-1) + `1` + strings.Repeat(`}`, MaxDepth)
	for _, c := range []struct {
		doc, why string
	}{
		{`{"a":[1,2]}`, "arrays"},
		{`{"a.b":1}`, "'.'"},
		{`{"a b":1}`, "space"},
		{`{"$x":1}`, "'$'"},
		{"{\"a\\u0001\":1}", "control"},
		{`{"n":4503599627370497}`, "±2^52"},
		{`{"n":-4503599627370497}`, "±2^52"},
		{`{"s":"` + strings.Repeat("x", MaxStringBytes+1) + `"}`, "longer than 4096"},
		{`{"` + strings.Repeat("k", MaxKeyBytes+1) + `":1}`, "longer than 1024"},
		{deep, "deeper than 10"},
		{`{"o":{"":1}}`, "empty key"},
	} {
		err := Validate(mustParse(t, c.doc), "properties.desired", false)
		var te *Error
		if !errors.As(err, &te) || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.why) || !strings.HasPrefix(err.Error(), "properties.desired") {
			t.Errorf("%.60s: %v, want an error about %s", c.doc, err, c.why)
		}
	}
	for _, ok := range []string{`{"n":4503599627370496,"f":1.5e300,"b":false,"s":"","x":null}`, okDeep} {
		if err := Validate(mustParse(t, ok), "p", false); err != nil {
			t.Errorf("%.60s: %v", ok, err)
		}
	}
	// Read-only root keys are dropped when asked (an SDK sending back a twin it read).
	o := mustParse(t, `{"$version":3,"$metadata":{},"a":1}`)
	if err := Validate(o, "p", true); err != nil || len(o) != 1 {
		t.Errorf("%v %v", o, err)
	}
	for _, bad := range []string{`[1]`, `"x"`, `{"a":1} {}`, `{`} {
		if _, err := Parse([]byte(bad)); !errors.Is(err, ErrInvalid) {
			t.Errorf("Parse(%s): %v", bad, err)
		}
	}
}

func TestSizeLimitsLeaveTheSectionUnchanged(t *testing.T) {
	d := New(time.Now())
	big := strings.Repeat("x", 4000)
	var err error
	for i := 0; i < 20 && err == nil; i++ {
		err = d.Reported.Merge(Object{"k" + string(rune('a'+i)): big}, time.Now(), "properties.reported", MaxSectionBytes)
	}
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "32768") {
		t.Fatalf("%v", err)
	}
	before := js(t, d.Reported.Plain())
	if d.Reported.Merge(Object{"more": big}, time.Now(), "properties.reported", MaxSectionBytes) == nil || js(t, d.Reported.Plain()) != before {
		t.Fatal("a refused patch changed the section")
	}
	if err := d.MergeTags(Object{"t": strings.Repeat("y", 3000), "u": strings.Repeat("y", 3000), "v": strings.Repeat("y", 3000)}); err == nil {
		t.Fatal("tags over 8 KB accepted")
	}
	if d.ETag() == New(time.Now()).ETag() && d.Version != 1 {
		t.Fatal("etag")
	}
}
