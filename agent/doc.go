// Package agent is c2d-agent's core: Run wires the config, the hardware backend, the executed-id
// log, the dispatcher and the MQTT connection, and answers for every delivered message — executed
// and completed, or refused with a reason — exactly once in effect, whatever the network or the
// process does. See docs/agent.md for the design and the crash-window analysis.
package agent
