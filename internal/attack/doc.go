// Package attack is the hostile-input and resource-exhaustion regression suite (issue #17): each
// test replays one attack on the real c2d-hub binary, built as shipped and started through
// internal/testproc on loopback, and asserts what an operator would see — the hub keeps serving,
// refuses what it must with a clear reason, and says what happened in its log, /healthz and
// /metrics. docs/security.md maps every defence to its test here.
//
// Raw sockets speak MQTT here (not paho): attacks are malformed or unfinished packets that a
// well-behaved client library would never send.
package attack
