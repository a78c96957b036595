// Package conn is the agent's MQTT side: a paho client speaking Azure IoT Hub's device dialect with
// a persistent session, its own reconnect loop (capped exponential backoff with jitter, SAS token
// renewed by reconnecting before it expires), and settlement of each delivery.
//
// Deliveries are acknowledged manually. A delivery carrying a lock token ($c2d.lt) comes from a hub
// speaking c2d's disposition extension: the agent publishes complete/reject/abandon (QoS 1) to the
// disposition topic, waits for that publish to be acknowledged, then sends the PUBACK. Without a
// lock token (plain Azure IoT Hub) the PUBACK itself completes the message, a refusal is also
// reported as a D2C event, and an abandon is impossible: the delivery stays unacknowledged and the
// hub redelivers it.
//
// PUBACKs leave in the order the deliveries arrived on their connection (MQTT 3.1.1 §4.6), so one
// slow action delays the acknowledgement — never the execution — of later messages; dispositions
// (extension) are published as soon as each message is settled.
package conn
