// Package shiptest tests what we ship rather than how it works inside: the cross-built static
// binaries (run for real under qemu-user for ARMv6, ARMv7 and arm64), their reproducibility, the
// Debian packages (contents, maintainer scripts, an install/remove/purge into a scratch root) and
// the systemd units (systemd-analyze verify and security exposure). It has no non-test code.
//
// It needs qemu-user-static, dpkg and systemd-analyze on the machine; .ci/run installs them.
package shiptest
