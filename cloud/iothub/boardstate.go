package iothub

import "time"

// BoardState is the payload of the c2d agent's built-in `state` direct method (c2d's own
// convention on top of Azure's methods; docs/protocol.md): what a technician needs on one screen.
type BoardState struct {
	DeviceID      string                 `json:"deviceId"`
	Version       string                 `json:"version"`
	Backend       string                 `json:"backend"`
	ConfigHash    string                 `json:"configHash,omitempty"` // sha256 of the agent's config file, first 16 hex digits
	Started       time.Time              `json:"started"`
	UptimeSeconds float64                `json:"uptimeSeconds"`
	Outputs       map[string]OutputState `json:"outputs"`
	Inputs        map[string]InputState  `json:"inputs"`
	Completed     int                    `json:"completed"` // messages and methods carried out since start
	Rejected      int                    `json:"rejected"`
	LastError     string                 `json:"lastError,omitempty"`
	LastCommands  []CommandRecord        `json:"lastCommands"` // newest last
}

// OutputState is one output's logical state ("on"/"off"), since when (the agent's start for an
// output never switched), and whether a command holds it right now.
type OutputState struct {
	State string    `json:"state"`
	Since time.Time `json:"since"`
	Busy  bool      `json:"busy"`
}

// InputState is one input's debounced logical state and since when.
type InputState struct {
	State string    `json:"state"`
	Since time.Time `json:"since"`
}

// CommandRecord is one finished command: a C2D message or a direct method.
type CommandRecord struct {
	Via     string    `json:"via"`          // "message" or "method"
	ID      string    `json:"id,omitempty"` // message id, or method name
	What    string    `json:"what,omitempty"`
	Outcome string    `json:"outcome"` // complete, reject, abandon
	Reason  string    `json:"reason,omitempty"`
	At      time.Time `json:"at"`
}

// MethodOutcome is the payload of the agent's answer to an action or command method.
type MethodOutcome struct {
	Outcome string `json:"outcome"` // done, rejected, busy, failed, unknown
	Plan    string `json:"plan,omitempty"`
	Reason  string `json:"reason,omitempty"`
	TookMs  int64  `json:"tookMs,omitempty"`
}

// Board method statuses: the agent answers like an HTTP server, with the same reasons as its
// rejections of C2D messages.
const (
	MethodOK       = 200 // carried out
	MethodBad      = 400 // refused: bad or disallowed payload (the rejection reason)
	MethodNotFound = 404 // no such method on this board
	MethodBusy     = 409 // an output it needs is running another command
	MethodFailed   = 500 // the hardware failed (outputs returned to safe state)
	MethodOverload = 503 // too many method calls waiting
)
