package periphhw_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/c2d-project/c2d/hw"
	"github.com/c2d-project/c2d/hw/hwtest"
	"github.com/c2d-project/c2d/hw/periphhw"
)

func pinSpec(name, pin string) hw.OutputSpec {
	return hw.OutputSpec{Name: name, Kind: hw.KindGPIO, Pin: pin, Line: -1}
}

func chipLine(name, chip string, line int) hw.OutputSpec {
	return hw.OutputSpec{Name: name, Kind: hw.KindGPIO, Chip: chip, Line: line}
}

// pi5 is a Pi 5's chips: RP1 first (pinctrl-* sorts first), then the SoC's, which also names a
// line 2712_WAKE, as the real board does.
func pi5() []periphhw.Chip {
	return []periphhw.Chip{
		hwtest.Pi5Chip(),
		hwtest.NewChip("gpiochip10", "gpio-brcmstb@107d508500", append([]string{"", "2712_BOOT_CS_N", "2712_WAKE"}, make([]string, 29)...)...),
	}
}

func pi4() []periphhw.Chip {
	return []periphhw.Chip{
		hwtest.Pi4Chip(),
		hwtest.NewChip("gpiochip1", "raspberrypi-exp-gpio", "BT_ON", "WL_ON", "PWR_LED_OFF", "GLOBAL_RESET", "VDD_SD_IO_SEL", "CAM_GPIO", "SD_PWR_ON", ""),
	}
}

func TestResolve(t *testing.T) {
	tests := []struct {
		name      string
		chips     []periphhw.Chip
		spec      hw.OutputSpec
		chip      string // want chip name
		line      int
		lineName  string
		wantErr   string // exact error text when set
		notFound  bool   // error wraps hw.ErrNotFound
		errSubstr string
	}{
		{name: "pi5 by name", chips: pi5(), spec: pinSpec("relay1", "GPIO17"), chip: "gpiochip0", line: 17, lineName: "GPIO17"},
		{name: "pi5 GPIO0", chips: pi5(), spec: pinSpec("relay1", "GPIO0"), chip: "gpiochip0", line: 0, lineName: "GPIO0"},
		{name: "pi5 non-header name", chips: pi5(), spec: pinSpec("fan", "FAN_PWM"), chip: "gpiochip0", line: 45, lineName: "FAN_PWM"},
		{name: "pi5 offset beyond header names", chips: pi5(), spec: pinSpec("x", "GPIO28"), chip: "gpiochip0", line: 28, lineName: "PCIE_RP1_WAKE"},
		{name: "pi5 unknown GPIO99", chips: pi5(), spec: pinSpec("relay1", "GPIO99"), notFound: true,
			wantErr: `relay1.pin: no line "GPIO99" (chips: pinctrl-rp1 [54 lines], gpio-brcmstb@107d508500 [32 lines])`},
		{name: "pi5 unknown name", chips: pi5(), spec: pinSpec("relay1", "RELAY"), notFound: true,
			wantErr: `relay1.pin: no line "RELAY" (chips: pinctrl-rp1 [54 lines], gpio-brcmstb@107d508500 [32 lines])`},
		{name: "name on two chips", chips: pi5(), spec: pinSpec("wake", "2712_WAKE"),
			wantErr: `wake.pin: line name "2712_WAKE" is on more than one chip (pinctrl-rp1 (gpiochip0) line 47, gpio-brcmstb@107d508500 (gpiochip10) line 2): give chip and line instead`},
		{name: "name on two chips, chip given", chips: pi5(), spec: hw.OutputSpec{Name: "wake", Kind: hw.KindGPIO, Pin: "2712_WAKE", Chip: "gpio-brcmstb@107d508500", Line: -1}, chip: "gpiochip10", line: 2, lineName: "2712_WAKE"},
		{name: "duplicate named periph's way", chips: pi5(), spec: pinSpec("wake", "gpiochip10-2712_WAKE"), chip: "gpiochip10", line: 2, lineName: "2712_WAKE"},
		{name: "pi4 by name", chips: pi4(), spec: pinSpec("relay1", "GPIO17"), chip: "gpiochip0", line: 17, lineName: "GPIO17"},
		{name: "pi4 function name", chips: pi4(), spec: pinSpec("i2c", "SDA1"), chip: "gpiochip0", line: 2, lineName: "SDA1"},
		{name: "pi4 GPIO4 falls back to offset", chips: pi4(), spec: pinSpec("clk", "GPIO4"), chip: "gpiochip0", line: 4, lineName: "GPIO_GCLK"},
		{name: "pi4 GPIO8 falls back to offset", chips: pi4(), spec: pinSpec("cs", "GPIO8"), chip: "gpiochip0", line: 8, lineName: "SPI_CE0_N"},
		{name: "pi4 expander line by name", chips: pi4(), spec: pinSpec("pwr", "PWR_LED_OFF"), chip: "gpiochip1", line: 2, lineName: "PWR_LED_OFF"},
		{name: "pi4 GPIO99", chips: pi4(), spec: pinSpec("relay1", "GPIO99"), notFound: true,
			wantErr: `relay1.pin: no line "GPIO99" (chips: pinctrl-bcm2711 [58 lines], raspberrypi-exp-gpio [8 lines])`},
		{name: "chip label and line", chips: pi4(), spec: chipLine("relay1", "pinctrl-bcm2711", 23), chip: "gpiochip0", line: 23, lineName: "GPIO23"},
		{name: "chip name and line", chips: pi4(), spec: chipLine("relay1", "gpiochip1", 7), chip: "gpiochip1", line: 7, lineName: ""},
		{name: "chip device path and line", chips: pi4(), spec: chipLine("relay1", "/dev/gpiochip1", 0), chip: "gpiochip1", line: 0, lineName: "BT_ON"},
		{name: "unknown chip", chips: pi4(), spec: chipLine("relay1", "pinctrl-rp1", 3), notFound: true,
			wantErr: `relay1.chip: no chip "pinctrl-rp1" (chips: pinctrl-bcm2711 [58 lines], raspberrypi-exp-gpio [8 lines])`},
		{name: "line out of range", chips: pi4(), spec: chipLine("relay1", "raspberrypi-exp-gpio", 8), notFound: true,
			wantErr: `relay1.line: no line 8 on chip raspberrypi-exp-gpio (gpiochip1 has lines 0..7)`},
		{name: "negative line", chips: pi4(), spec: chipLine("relay1", "raspberrypi-exp-gpio", -1), notFound: true, errSubstr: "relay1.line: no line -1"},
		{name: "pin name not on given chip", chips: pi4(), spec: hw.OutputSpec{Name: "r", Kind: hw.KindGPIO, Chip: "raspberrypi-exp-gpio", Pin: "GPIO17", Line: -1}, notFound: true,
			wantErr: `r.pin: no line "GPIO17" on chip raspberrypi-exp-gpio (gpiochip1, 8 lines)`},
		{name: "two chips with one label", chips: []periphhw.Chip{hwtest.NewChip("gpiochip0", "sim", "A"), hwtest.NewChip("gpiochip1", "sim", "B")}, spec: chipLine("r", "sim", 0),
			wantErr: `r.chip: more than one chip is labelled "sim" (gpiochip0, gpiochip1): name the chip instead`},
		{name: "GPIO<n> without a pinctrl chip", chips: []periphhw.Chip{hwtest.NewChip("gpiochip0", "gpio-sim", "A", "B", "C")}, spec: pinSpec("r", "GPIO1"), notFound: true,
			wantErr: `r.pin: no line "GPIO1" (chips: gpio-sim [3 lines])`},
		{name: "GPIO<n> beyond the pinctrl chip", chips: []periphhw.Chip{hwtest.NewChip("gpiochip0", "pinctrl-x", "GPIO1", "GPIO0")}, spec: pinSpec("r", "GPIO3"), notFound: true,
			wantErr: `r.pin: no line "GPIO3" (chips: pinctrl-x [2 lines])`},
		{name: "not a GPIO<n> name", chips: []periphhw.Chip{hwtest.NewChip("gpiochip0", "pinctrl-x", "GPIO1", "GPIO0")}, spec: pinSpec("r", "GPIO2x"), notFound: true, errSubstr: `no line "GPIO2x"`},
		{name: "offset swapped names refused", chips: []periphhw.Chip{hwtest.NewChip("gpiochip0", "pinctrl-x", "GPIO1", "X", "GPIO9")}, spec: pinSpec("r", "GPIO2"), notFound: true,
			wantErr: `r.pin: no line "GPIO2", and line 2 of pinctrl-x is named "GPIO9": give chip and line instead`},
		{name: "no chips at all", chips: nil, spec: pinSpec("r", "GPIO17"), notFound: true, wantErr: `r.pin: no line "GPIO17" (chips: none)`},
		{name: "neither pin nor chip", chips: pi5(), spec: hw.OutputSpec{Name: "r", Kind: hw.KindGPIO, Line: 3}, wantErr: "r.pin: no pin, and no chip and line, given"},
		{name: "unknown kind", chips: pi5(), spec: hw.OutputSpec{Name: "r", Kind: "pwm", Pin: "GPIO1"}, errSubstr: `r.kind: unknown kind "pwm"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sys := periphhw.System{Chips: tc.chips}
			res, err := sys.Resolve([]hw.OutputSpec{tc.spec}, periphhw.Options{})
			if tc.wantErr != "" || tc.errSubstr != "" {
				if err == nil {
					t.Fatalf("resolved to %+v, want error", res)
				}
				if tc.wantErr != "" && err.Error() != tc.wantErr {
					t.Errorf("error\n got %s\nwant %s", err, tc.wantErr)
				}
				if !strings.Contains(err.Error(), tc.errSubstr) {
					t.Errorf("error %q does not contain %q", err, tc.errSubstr)
				}
				if got := errors.Is(err, hw.ErrNotFound); got != tc.notFound {
					t.Errorf("errors.Is(err, hw.ErrNotFound) = %v, want %v", got, tc.notFound)
				}
				var oe *hw.OutputError
				if !errors.As(err, &oe) || oe.Output != tc.spec.Name {
					t.Errorf("error %v is not a *hw.OutputError for %q", err, tc.spec.Name)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			r := res[0]
			if r.Chip != tc.chip || r.Line != tc.line || r.LineName != tc.lineName || r.Output != tc.spec.Name {
				t.Errorf("resolved to %s line %d %q, want %s line %d %q", r.Chip, r.Line, r.LineName, tc.chip, tc.line, tc.lineName)
			}
		})
	}
}

func TestResolveRejectsSharedLinesAndNames(t *testing.T) {
	tests := []struct {
		name  string
		specs []hw.OutputSpec
		want  string
	}{
		{"same line by name and offset", []hw.OutputSpec{pinSpec("relay1", "GPIO17"), chipLine("relay2", "pinctrl-rp1", 17)},
			`relay2.line: pinctrl-rp1 (gpiochip0) line 17 is already used by output "relay1"`},
		{"same pin twice", []hw.OutputSpec{pinSpec("a", "GPIO5"), pinSpec("b", "GPIO5")},
			`b.pin: pinctrl-rp1 (gpiochip0) line 5 is already used by output "a"`},
		{"same name twice", []hw.OutputSpec{pinSpec("a", "GPIO5"), pinSpec("a", "GPIO6")}, `a.name: output "a" declared twice`},
		{"empty name", []hw.OutputSpec{pinSpec("", "GPIO5")}, `.name: empty output name`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := periphhw.System{Chips: pi5()}.Resolve(tc.specs, periphhw.Options{})
			if err == nil || err.Error() != tc.want {
				t.Fatalf("error %v, want %s", err, tc.want)
			}
		})
	}
}

// The agent prefixes the config path; the result must read like the guide's example and still
// match hw.ErrNotFound.
func TestOutputErrorPrefix(t *testing.T) {
	_, err := periphhw.System{Chips: pi5()}.Resolve([]hw.OutputSpec{pinSpec("led1", "GPIO99")}, periphhw.Options{})
	err = fmt.Errorf("load /etc/c2d/agent.yaml: outputs.%w", err)
	want := `load /etc/c2d/agent.yaml: outputs.led1.pin: no line "GPIO99" (chips: pinctrl-rp1 [54 lines], gpio-brcmstb@107d508500 [32 lines])`
	if err.Error() != want || !errors.Is(err, hw.ErrNotFound) {
		t.Fatalf("got %v (is not found: %v), want %s", err, errors.Is(err, hw.ErrNotFound), want)
	}
}
