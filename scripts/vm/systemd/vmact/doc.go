// Command c2d-vm-act is the board's green ACT LED in the systemd VM test (scripts/vm-systemd-test.sh):
// it registers a uleds LED named ACT, so /sys/class/leds/ACT exists as on a Pi, tells systemd it is
// ready, and appends every brightness the kernel's LED core sets to a log, one line each:
// "<unix nanoseconds> <brightness>". The test reads that log to see what the agent did to the LED.
package main
