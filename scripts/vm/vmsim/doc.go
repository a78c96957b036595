// Package vmsim drives the simulated hardware of the VM GPIO test (scripts/vm-gpio-test.sh): GPIO
// chips of the kernel's gpio-sim driver created through configfs, LEDs of the uleds driver, and the
// kernel's gpio trace events. It is the test's view of the kernel side: what the kernel drove on a
// line (sim_gpioN/value, trace events), and every brightness the LED core handed to an LED.
//
// It only works inside the test VM (root, gpio-sim and uleds loaded, configfs and tracefs
// mounted); the tests that use it carry the vmgpio build tag. Create chips and LEDs before
// anything initialises periph.io: its drivers enumerate chips and LEDs once.
package vmsim
