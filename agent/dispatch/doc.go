// Package dispatch runs plans on the board. Jobs on one output run in arrival order; jobs on
// different outputs run concurrently; a job that spans several outputs (a named command) holds all
// of them for its whole run, admitted in arrival order so it neither interleaves with nor
// deadlocks against other jobs. Submitting never blocks, so the MQTT handler can hand work off and
// return at once.
//
// Timed steps (blink, pulse, wait) run against the process clock, not the network: a dropped
// connection does not stop or stretch them. Shutdown cuts them short and drives every output the
// job touched to its safe state.
package dispatch
