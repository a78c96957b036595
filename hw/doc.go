// Package hw holds the narrow interfaces through which the agent moves and reads hardware: named
// outputs (GPIO lines and LEDs) that are switched on and off, and named inputs (GPIO lines, read
// on edge events and debounced by the backend). Like periph.io's conn, this package holds
// interfaces and plain specs only; drivers live beside it: hw/periphhw (real GPIO character device
// and sysfs LEDs), hw/simhw (a simulated board that writes its state to a JSON file), and
// hw/hwtest (fakes for unit tests, built on periph's gpiotest).
package hw
