package server

import (
	"strings"
	"testing"
)

// Whatever a config file holds, Parse returns a valid configuration or an error on one line
// naming what is wrong; it never panics.
func FuzzParseConfig(f *testing.F) {
	f.Add("queue:\n  max_delivery_count: 5\n")
	f.Add("listen:\n  mqtt: \"off\"\n  http: 127.0.0.1:0\n")
	f.Fuzz(func(t *testing.T, doc string) {
		cfg, err := Parse(strings.NewReader(doc))
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		if verr := cfg.Validate(); verr != nil {
			t.Fatalf("Parse accepted a config that does not validate: %v", verr)
		}
	})
}
