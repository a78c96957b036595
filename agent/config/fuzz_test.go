package config

import "testing"

// FuzzParse: any document either fails with an error or yields a config that validates again and
// whose catalog only names declared outputs.
func FuzzParse(f *testing.F) {
	f.Add([]byte(base))
	f.Add([]byte(base + "commands:\n  x:\n    steps:\n      - {target: led1, action: blink, count: 3, on: 1s}\n      - wait: 2s\n"))
	f.Add([]byte("outputs: &a\n  x: *a\n"))
	f.Add([]byte("connection: {connection_string_file: /x}\noutputs: {a: {chip: c, line: 3, safe: on}}\n"))
	f.Add([]byte(base + "inputs:\n  door: {pin: GPIO22, pull: up, active_low: true, debounce: 0, edge: falling}\n  b: {chip: c, line: 4}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("valid config fails a second Validate: %v", err)
		}
		for _, in := range c.InputSpecs() {
			if c.Outputs[in.Name] != nil || in.Debounce < 0 || in.Debounce > MaxDebounce || in.Pull == "" || in.Edge == "" {
				t.Fatalf("accepted input %+v", in)
			}
		}
		cat := c.Catalog()
		for _, cmd := range cat.Commands {
			for _, s := range cmd.Steps {
				if s.Target != "" && c.Outputs[s.Target] == nil {
					t.Fatalf("command %s targets undeclared %q", cmd.Name, s.Target)
				}
			}
		}
	})
}
