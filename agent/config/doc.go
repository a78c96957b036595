// Package config loads the board's agent.yaml: the connection to the hub, the hardware backend, the
// outputs the cloud may touch (and what it may do to each) and the named commands. Loading is strict
// — an unknown key, a bad value or an inconsistent declaration fails at start-up with the field's
// path (`outputs.relay1.max_duration: "30" is not a duration ...`) — and happens once: the agent
// runs from the resolved struct.
package config
