package config

import (
	"strings"
	"testing"
	"time"

	"github.com/c2d-project/c2d/hw"
)

func TestInputs(t *testing.T) {
	c, err := Parse([]byte(base + `inputs:
  door:
    pin: GPIO22
    pull: up
    active_low: true
    debounce: 50ms
  button:
    chip: pinctrl-rp1
    line: 5
    edge: falling
    debounce: 0
  pir:
    pin: GPIO6
`))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.InputOrder, ","); got != "door,button,pir" {
		t.Fatalf("order %s", got)
	}
	want := []hw.InputSpec{
		{Name: "door", Pin: "GPIO22", Line: -1, Pull: hw.PullUp, ActiveLow: true, Debounce: 50 * time.Millisecond, Edge: hw.EdgeBoth},
		{Name: "button", Chip: "pinctrl-rp1", Line: 5, Pull: hw.PullNone, Debounce: 0, Edge: hw.EdgeFalling},
		{Name: "pir", Pin: "GPIO6", Line: -1, Pull: hw.PullNone, Debounce: DefaultDebounce, Edge: hw.EdgeBoth},
	}
	got := c.InputSpecs()
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("input %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestInputValidationErrors(t *testing.T) {
	in := base + "inputs:\n  door:\n"
	for _, tt := range []struct{ name, yaml, want string }{
		{"pull", in + "    pin: GPIO22\n    pull: sideways\n", `inputs.door.pull: "sideways" is not one of up, down, none (line 10)`},
		{"edge", in + "    pin: GPIO22\n    edge: up\n", `inputs.door.edge: "up" is not one of both, rising, falling (line 10)`},
		{"debounce syntax", in + "    pin: GPIO22\n    debounce: 20\n", `inputs.door.debounce: "20" is not a duration (e.g. 20ms, 0 to turn it off) (line 10)`},
		{"debounce negative", in + "    pin: GPIO22\n    debounce: -5ms\n", `inputs.door.debounce: "-5ms" is negative (line 10)`},
		{"debounce long", in + "    pin: GPIO22\n    debounce: 1m\n", `inputs.door.debounce: 1m is above 10s (line 10)`},
		{"active_low", in + "    pin: GPIO22\n    active_low: maybe\n", `inputs.door.active_low: "maybe" is not true or false (line 10)`},
		{"unknown field", in + "    pin: GPIO22\n    safe: off\n", `inputs.door.safe: unknown field (known: pin, chip, line, pull, active_low, debounce, edge) (line 10)`},
		{"no line", in + "    pull: up\n", `inputs.door: set pin, or chip with line (line 8)`},
		{"empty", in, `inputs.door: empty declaration: set pin, or chip with line (line 8)`},
		{"pin and chip", in + "    pin: GPIO22\n    chip: gpiochip0\n    line: 3\n", `inputs.door: set pin, or chip with line, not both (line 8)`},
		{"chip no line", in + "    chip: gpiochip0\n", `inputs.door.line: required with chip (line 9)`},
		{"output's pin", in + "    pin: GPIO17\n", `inputs.door.pin: pin GPIO17 is already used by outputs.led1 (line 9)`},
		{"output's name", base + "inputs:\n  led1:\n    pin: GPIO4\n", `inputs.led1: outputs.led1 has the same name: an input and an output need different names (line 8)`},
		{"bad name", base + "inputs:\n  \"front door\":\n    pin: GPIO4\n", `inputs.front door: name must be 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit (line 8)`},
		{"sim needs inputs_file", base + "hardware:\n  backend: sim\n  sim:\n    state_file: /tmp/s.json\ninputs:\n  door:\n    pin: GPIO4\n", `hardware.sim.inputs_file: required with backend sim when inputs are declared (the file the simulated inputs are read from) (line 10)`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml))
			if err == nil || err.Error() != tt.want {
				t.Errorf("error\n got: %v\nwant: %s", err, tt.want)
			}
		})
	}
}
