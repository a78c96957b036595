// Package hub is c2d-hub's core: the device registry and shared access policies, durable per-device
// cloud-to-device queues with Azure's lifecycle (Enqueued → Invisible → Completed / dead-lettered),
// delivery feedback batches, and the timers (lock expiry, TTL, feedback batching) that drive them.
//
// The durable store (SQLite via modernc.org/sqlite) is the one source of truth. The hub knows
// nothing of MQTT: connected devices reach it through the small Conn interface, implemented by
// cloud/broker for the embedded mochi-mqtt broker (or, later, by a bridge to an external broker).
// The HTTP service API (cloud/api) calls the methods of *Hub.
package hub
