// Package iothub is the wire contract shared by c2d-agent, c2d-hub and the c2d CLI: Azure IoT Hub's
// MQTT device dialect (topics, property bags, CONNECT usernames, client ids), SAS tokens, connection
// strings, the cloud-to-device message model with its validation rules, delivery feedback records,
// the registry and service-API JSON shapes, and c2d's documented disposition extension.
//
// Everything here is pure: no I/O, no clocks read (callers pass "now"), no globals that change.
// Where Azure defines a name or a format, this package uses it unchanged; c2d's additions are marked
// as extensions here and in docs/protocol.md.
package iothub
