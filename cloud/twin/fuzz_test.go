package twin

import (
	"encoding/json"
	"testing"
	"time"
)

// FuzzPatch: any accepted patch merges without panicking, keeps the section valid and re-renders
// as JSON; a rejected one leaves it unchanged.
func FuzzPatch(f *testing.F) {
	f.Add([]byte(`{"outputs":{"relay1":"on"}}`), []byte(`{"outputs":{"relay1":null}}`))
	f.Add([]byte(`{"a":{"b":{"c":1.5}}}`), []byte(`{"a":"x"}`))
	f.Add([]byte(`{"a":[1]}`), []byte(`{"$v":1}`))
	f.Fuzz(func(t *testing.T, p1, p2 []byte) {
		d := New(time.Unix(0, 0))
		for _, p := range [][]byte{p1, p2} {
			o, err := Parse(p)
			if err != nil {
				continue
			}
			if Validate(o, "p", false) != nil {
				continue
			}
			before, _ := json.Marshal(d.Desired.Plain())
			if err := d.Desired.Merge(o, time.Unix(1, 0), "p", MaxSectionBytes); err != nil {
				after, _ := json.Marshal(d.Desired.Plain())
				if string(before) != string(after) {
					t.Fatal("refused patch changed the section")
				}
				continue
			}
			if err := Validate(d.Desired.Props, "p", false); err != nil {
				t.Fatalf("merged section invalid: %v", err)
			}
			if _, err := json.Marshal(d.Desired.Render(true)); err != nil {
				t.Fatal(err)
			}
		}
	})
}
