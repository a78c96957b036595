// Package bench is c2d's benchmark suite (bin/c2d-bench, `make bench`) and the process harness the
// fault-injection suite (internal/chaos) shares: it starts the real c2d-hub and c2d-agent binaries
// and baseline brokers (a plain mochi-mqtt server, Debian's Mosquitto) on loopback, drives them
// with a lightweight MQTT 3.1.1 device client and the service API, and reports every figure beside
// a baseline measured in the same run (docs/benchmarks.md).
package bench
