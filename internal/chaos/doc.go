// Package chaos is c2d's fault-injection suite. Its tests run the real programs — the c2d-hub and
// c2d-agent binaries (sim hardware), built once in TestMain with `go build` — on loopback, inject
// faults under load (kill -9 of the hub and of the agent mid-action, connections cut by an
// in-test TCP proxy, graceful hub restarts, queue overflow, expiry while offline) and then check
// the invariants a user relies on:
//
//   - every message the hub acknowledged (201 from the service API) ends in exactly one terminal
//     state, and a send whose answer was lost either never existed (404103) or ends the same way;
//   - every message that asked for feedback gets exactly one feedback record, whose status is the
//     message's outcome, and no record names a message that was never stored;
//   - no message moves a pin twice: the simulated board's transition log has exactly one toggle
//     per completed toggle command, and one pulse per completed pulse (plus at most one for each
//     pulse the agent was killed in the middle of, which the agent then rejects as interrupted);
//   - the agent is back and connected (the hub's view: connectionState Connected, updated after
//     the fault) within its reconnect_max plus a fixed allowance after each fault.
//
// `go test ./internal/chaos` runs the short version (a handful of faults of each kind, well under
// 90 s) and is part of `make test`. The long version injects many more faults:
//
//	C2D_CHAOS_LONG=1 go test ./internal/chaos -run Chaos -count=1 -timeout 30m -v
//	go test ./internal/chaos -run Chaos -count=1 -timeout 30m -v -args -long
//
// Both print one summary line per test and a total (faults injected, messages acknowledged, lost,
// duplicated). Waiting is always a polled condition with a deadline; the random delays before a
// fault are the fault schedule, not synchronisation.
package chaos
