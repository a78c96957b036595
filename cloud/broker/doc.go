// Package broker is c2d-hub's embedded MQTT broker: mochi-mqtt v2 speaking Azure IoT Hub's MQTT
// device dialect, connected to the hub core (cloud/hub) through hooks, one concern each. mochi is
// the copy in internal/mochi, patched so that a connection's goroutine never grows its stack for
// the packet path (internal/mochi/NOTE.md: an idle device's memory is mostly that stack).
//
//   - authHook: MQTT 3.1.1 only (3.1 and 5 are refused with "unacceptable protocol version", as
//     docs/protocol.md §1 says). CONNECT is checked by Core.Authenticate (client id, username in
//     every SDK variant, SAS token). Bad or expired tokens, wrong keys, mismatched ids and unknown
//     devices get CONNACK 0x04 (bad username or password: a stranger cannot tell registered
//     device ids from others), a disabled device with a valid token 0x05 (not authorized), a
//     core failure 0x03 (server unavailable); the reason is logged, never the
//     token. Keep-alive is capped at Azure's 1767 s (0 counts as "more"). Will messages are
//     dropped (mochi would publish them past the ACL; c2d routes no device publishes). OnACLCheck
//     isolates devices: a device may subscribe only to its own
//     `devices/{id}/messages/devicebound/#` and publish only to its own
//     `devices/{id}/messages/events/...` and, with the extension, its own
//     `$c2d/devices/{id}/messages/devicebound/{lockToken}/{complete|reject|abandon}` (its own
//     `$c2d/devices/{id}/messages/devicebound/#` filter may be subscribed; nothing is published
//     there). A refused SUBSCRIBE gets 0x80; a refused QoS 1 PUBLISH closes the connection (3.1.1
//     has no negative PUBACK), a refused QoS 0 one is dropped. The filters
//     the official SDKs subscribe to on every connection (`$iothub/methods/POST/#`,
//     `$iothub/twin/res/#`, `$iothub/twin/PATCH/properties/desired/#`) are granted, and their
//     method answers (`$iothub/methods/res/...`) go to methodHook; twin requests
//     (`$iothub/twin/...`) are accepted and dropped, so an SDK that asks for its twin times out
//     instead of losing its connection (and its C2D messages) over and over. Modules may connect and publish their own
//     events; they get no cloud-to-device messages (as on Azure).
//   - qosHook: Azure's QoS rules. QoS 2 subscriptions are granted QoS 1 (MaximumQos capability),
//     and a QoS 2 PUBLISH closes the connection. Deliveries are QoS 1; a device that subscribed
//     with QoS 0 gets them at QoS 0 (MQTT forbids more than granted) and, having no PUBACK to
//     give, each is completed once written (at most once, what it asked for).
//   - sessionHook: a session is attached to the core once its device-bound SUBACK is on the wire,
//     or at once when a resumed persistent session (CleanSession=0) already holds that
//     subscription (paho and the SDKs do not subscribe again on reconnect). Unsubscribe and
//     disconnect detach it. When a second connection takes over a client id, the old session is
//     detached before the new one is attached, whichever connection's goroutine runs first, and
//     only the session mochi holds as that client id's current one may take the device over (a
//     session replaced before its hooks ran never attaches). When
//     the SAS token expires the connection is closed, as Azure does. Core.OnDeviceGone (device
//     deleted or disabled) drops the device's connections.
//   - methodHook: direct methods (cloud/methods). A session can take method requests once its
//     `$iothub/methods/POST/#` SUBACK is on the wire (or at once when a resumed session holds the
//     subscription); PublishMethod writes a request at QoS 0 to the device's current session
//     only, never parking it; a device's `$iothub/methods/res/{status}/?$rid=` answers go to
//     Options.Methods under the device's own id, so no device can answer another's call.
//   - twinHook: device twins (cloud/twin through Options.Twins). `$iothub/twin/GET/?$rid=` and
//     `$iothub/twin/PATCH/properties/reported/?$rid=` are served on the device's read goroutine
//     (in order; a 204 means durable) and answered on `$iothub/twin/res/{status}/?$rid=` at QoS 0,
//     errors with a JSON errorCode body; PublishDesired pushes desired changes to a session
//     subscribed to `$iothub/twin/PATCH/properties/desired/#` (a resumed session keeps it).
//   - deliveryHook: PUBACKs and disposition publishes become Core.Settle; every device publish is
//     acknowledged and dropped (c2d-hub does not route telemetry; a reject report — a D2C event
//     with `c2d-report=reject` — is logged with the original message id and reason). Every
//     device event is also handed to Events.DeviceEvent, which c2d-hub points at its bounded
//     in-memory event log for `c2d events`.
//
// # Why deliveries bypass mochi's routing
//
// The hub's durable store is the one source of truth: a message is delivered only to a connected,
// subscribed session, and an undelivered or unacknowledged message waits in the store, not in the
// broker. Publishing through mochi's inline client (Server.Publish) would route by topic through
// the subscription tree, and for a disconnected persistent session mochi parks QoS 1 messages in
// that session's inflight store and resends them on reconnect — a second, volatile copy of the
// queue, lost on restart, that resurrects stale lock tokens and bypasses lock expiry and delivery
// counts. So Conn.Deliver writes a QoS 1 PUBLISH straight to that one client's socket (through the
// session's own writer goroutine and mochi's Client.WritePacket, which serialises with mochi's own
// writes), and nothing is ever routed to a device through the topic tree (the ACL refuses it
// anyway).
//
// Packet ids and the packet id → lock token table are the broker's own, not mochi's inflight
// store: mochi v2.7.9 keeps inbound and outbound QoS flows of a client in one map keyed by packet
// id, so a device's own QoS 1 publish (a disposition, say) that reuses the id of an outstanding
// delivery deletes that delivery's entry, and its PUBACK would then be lost. PUBACKs are read in
// OnPacketRead, before mochi, in any order. On disconnect mochi's inflight store is cleared, so a
// resumed session never gets a stale resend: the core redelivers what was in flight.
//
// Listeners are the broker's own (plain TCP, TLS, WebSockets and WebSockets over TLS at
// `/$iothub/websocket` with subprotocol `mqtt`), binding in Start so that ":0" reports its real
// port through Addr, and giving every connection ConnectTimeout to finish TLS and send CONNECT.
// Keep-alive is mochi's: 1.5 × the client's value. Inbound packets may be up to MaxPacketSize.
package broker
