// Package server turns the hub core into the c2d-hub program: it resolves the configuration once
// (defaults, configs/hub.yaml, flags) into a validated Config, prepares TLS material (given files,
// or a CA and server certificate generated in DATA/tls), wires the hub core, the embedded MQTT
// broker and the HTTP service API, writes DATA/endpoints.json once everything is bound, speaks
// sd_notify, and shuts down gracefully: stop accepting, end long-polls, finish in-flight writes,
// close the store.
package server
