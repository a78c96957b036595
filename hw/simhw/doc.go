// Package simhw is a simulated board for laptops, demos and tests: outputs exist only as a JSON
// state file (and, optionally, a log of transitions) that a person (`watch cat state.json`), the
// demo or a test reads.
//
// # State file (Options.StateFile)
//
// Rewritten on every change (and at Open and Close) by writing a temporary file in the same
// directory and renaming it over the old one, so a reader always sees a complete file; with
// Options.Sync the data and directory are fsynced too. Mode 0644. Example:
//
//	{
//	  "updated": "2026-11-25T21:50:00.123456789Z",
//	  "seq": 7,
//	  "closed": false,
//	  "outputs": {
//	    "relay1": {"on": true, "safe": false, "kind": "gpio", "pin": "GPIO17", "active_low": true,
//	               "level": "low", "changes": 3},
//	    "fan":    {"on": false, "safe": false, "kind": "gpio", "chip": "pinctrl-rp1", "line": 5,
//	               "level": "low", "changes": 0},
//	    "act":    {"on": false, "safe": false, "kind": "led", "led": "ACT", "level": "low", "changes": 2}
//	  }
//	}
//
// updated is when it was written (UTC, RFC 3339 with nanoseconds); seq is the seq of the last
// transition (the log's last line); closed is true once Close ran (every output then is in its
// safe state). Per output: on is the logical state, level the simulated physical level (on with
// active_low is "low"), changes the number of state changes since Open (Open's safe-state drive
// not counted); pin, chip, line, led and active_low echo the config (omitted when empty).
// ReadState parses it.
//
// Each change costs a file write and a rename: tens of microseconds on tmpfs (put the state file
// under /run on a board), around a millisecond on a VM's ext4 disk, which flushes data on a
// rename that replaces a file. BenchmarkSet measures it against an in-memory baseline
// (TMPDIR=/dev/shm go test -bench Set ./hw/simhw).
//
// # Transition log (Options.TransitionLog)
//
// Append-only JSON lines, one per transition, each written with one write(2):
//
//	{"seq":1,"time":"2026-11-25T21:50:00.1Z","output":"relay1","on":false,"cause":"open"}
//	{"seq":4,"time":"2026-11-25T21:50:01.2Z","output":"relay1","on":true,"cause":"set"}
//
// seq increases by one per line and continues across restarts (Open reads the log's last line);
// cause is "open" (Open drove the output to its safe state; one line per output on every Open),
// "set" (a Set that changed the state; setting the current state again logs nothing) or "close"
// (Close returned the output to safe). ReadTransitions parses it, ignoring a last line still
// being written.
//
// # Inputs (OpenInputs)
//
// Simulated inputs follow a JSON file of input name → "on"/"off" ({"door": "on"}) that whoever
// plays the outside world writes (WriteInputs replaces it atomically). It is watched with inotify
// on its directory (a replaced file is seen as well as one written in place; modification time
// twice a second off Linux). Inputs it does not name keep their state; a missing file leaves every
// input off; a file that does not parse is logged, changes nothing and shows in Err. No debounce.
//
// # Faults
//
// Options.FailNext and Board.FailNext make the next Set calls on an output fail with a
// *hw.TransientError wrapping ErrInjected, to test how the agent abandons messages. A state file
// that cannot be written fails Set (the simulated hardware did not change) and Healthy.
package simhw
