// Command c2d-bench measures c2d against baselines measured in the same run (raw MQTT through plain
// mochi-mqtt and Mosquitto, the disk's fsync) and prints a table and writes JSON. It starts every
// process it needs on loopback. See docs/benchmarks.md.
//
//	c2d-bench [--json bench.json] [--hub-bin bin/c2d-hub] [--agent-bin bin/c2d-agent] [--sections ...]
//	c2d-bench raw-broker --addr 127.0.0.1:PORT      (used by the bench itself: the plain-mochi baseline)
package main
