// Package e2e holds the VM GPIO test's end-to-end check (build tag vmgpio, run inside the VM by
// scripts/vm-gpio-test.sh): the real c2d-agent binary with the periph backend, connected over
// loopback MQTT to a real c2d-hub in the same VM, carries out messages sent through the hub's
// service API on gpio-sim lines and a uleds LED, and the test reads what the kernel saw. The binaries
// are built by the script into the initramfs (-c2d.bin, default /tests/bin).
package e2e
