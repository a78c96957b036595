// Package action turns the properties of a cloud-to-device message into a Plan: the steps that will
// move the board's outputs. It is the agent's gatekeeper: every value is parsed and checked against
// what the board's config allows before any pin moves, and every refusal carries a precise, stable
// reason that reaches the operator (reject reason, feedback, D2C report).
//
// The same Step type describes the steps of the config's named commands, so a command and a direct
// message run through the same executor.
package action
