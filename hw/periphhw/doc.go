// Package periphhw is the real hardware backend: GPIO lines through the Linux GPIO character
// device (periph.io/x/host/v3/gpioioctl, /dev/gpiochip*) and LEDs through the LED class
// (/sys/class/leds/<name>/brightness).
//
// # Drivers
//
// Only gpioioctl is linked in, and periph's driverreg.Init is called once per process. Neither
// periph.io/x/host/v3 (which links bcm283x: memory-mapped registers at BCM2711 addresses, wrong on
// a Pi 5) nor periph.io/x/host/v3/sysfs is imported: the latter would also load legacy sysfs GPIO,
// which registers "GPIO<global number>" names in gpioreg that shadow real line names on older
// kernels (on a Pi 4 with base 0, "GPIO4" would become a /sys/class/gpio pin). LEDs are driven by
// writing brightness directly (see sysfsLED for why periph's sysfs.LED is not used): that keeps
// the LED root redirectable (Options.LEDRoot) and clears the kernel trigger first.
//
// # Pin resolution
//
// Resolution works over the chips periph enumerated (pinctrl-* labels first), not over periph's
// global gpioreg, and in this order:
//
//   - pin: the kernel's line name, on any chip ("GPIO17" on a Pi 5's pinctrl-rp1, "SDA1" or
//     "GPIO_GCLK" on a Pi 4's pinctrl-bcm2711). A name on two chips (a Pi 5 has 2712_WAKE twice)
//     is an error asking for chip and line, or for "gpiochipN-NAME", the form periph registers
//     such duplicates under, which names the line on chip gpiochipN.
//   - pin "GPIO<n>" not found by name: line offset n on the first pinctrl-* chip (a Pi 4 names
//     GPIO4 "GPIO_GCLK"). If that line is itself named "GPIO<m>" with m≠n, it is refused.
//   - chip (label, or kernel name "gpiochip0") and line (offset); or chip and pin to look a name up
//     on that chip only. Chip numbers change between kernels (the Pi 5's RP1 was gpiochip4, now
//     gpiochip0): prefer labels.
//
// Failures are *hw.OutputError naming the field, wrapping hw.ErrNotFound, e.g.
// `relay1.pin: no line "GPIO99" (chips: pinctrl-rp1 [54 lines], gpio-brcmstb@107d508500 [32 lines])`.
// When /dev/gpiochip* exists but cannot be opened, periph skips its driver silently; Open says
// `cannot open /dev/gpiochip0: permission denied — is the user in the gpio group?` instead.
//
// # Driving
//
// Open resolves every output before moving anything, then drives each to its safe state (honouring
// ActiveLow) before returning. Outputs are never read back: on the character device a Read
// re-requests an output line as an input with pull-up, so State is the last commanded state.
// periph requests a line as output and then writes its value, so a line whose safe level is high
// (active-low outputs that are safe off) is low between the two ioctls: 20 µs to 3.6 ms in the
// VM test under qemu TCG, microseconds on a Pi. periph offers no way to request a line with its
// initial value.
// EBUSY, EAGAIN, EINTR, ETIMEDOUT, ENODEV and ENXIO come back as *hw.TransientError (periph
// flattens errnos into text, so they are matched by text too). Healthy fails when a chip's device
// node or an LED's directory disappears, when the last write failed with a non-transient error, or
// after three transient failures in a row. Close drives every output to its safe state and
// releases the lines; a Pi keeps driving a released line at its last level.
//
// # Tests
//
// System.Open works over any []Chip and LED finder, so resolution and driving are unit-tested
// with hwtest's fakes built on periph's gpiotest. The real kernel path (Open) needs
// /dev/gpiochip* and is exercised in the VM test (scripts/vm-gpio-test.sh), which must create its
// gpio-sim chips and uleds LEDs before the first Open or Resolve: periph enumerates once.
//
// # Inputs
//
// OpenInputs resolves input lines exactly like outputs' (an input may not take a line an output
// of the board holds: requesting it as an input would turn the output into one), requests each
// with its bias (pull up/down/none) and edge detection on the character device, reads its first
// level, and starts one goroutine per input. The goroutine blocks in periph's WaitForEdge (a read
// of the line's event file descriptor: no polling), then waits until no further edge arrives for
// the debounce period (each edge restarts it) and reads the level; only a change of the logical
// state (ActiveLow applied) is recorded and passed to the Notify callback. Close interrupts the
// waits with Halt and releases the lines. A failing wait is logged once and retried every second.
package periphhw
