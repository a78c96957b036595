// Package demo is `make demo`: the main job end to end on the embedded defaults, driven through the
// real binaries exactly as a person would type them. It starts c2d-hub in a temporary directory,
// provisions a device with the c2d CLI, starts c2d-agent on simulated hardware, sends commands (one
// of them invalid), prints every command line, each command's outcome and the simulated board as it
// changes, then stops the agent (outputs back to safe) and the hub.
package demo
