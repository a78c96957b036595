// Package amqp is c2d-hub's AMQP 1.0 server: the endpoints through which Azure's own service SDKs
// (azure-iothub for Node, azure-iot-hub for Python, the C service client) send cloud-to-device
// messages and read delivery feedback, and through which Azure's AMQP device transports receive and
// settle them. It is a room of its own over cloud/hub: every operation goes to the same hub core as
// MQTT and the HTTP API, so a message sent here is delivered over MQTT and vice versa, and feedback is
// the same records whichever way it is read.
//
// # Layers
//
// The frame and type codec is go-amqp's, vendored in internal/ (see internal/NOTE.md). On it this
// package keeps a small engine: conn.go (protocol headers, SASL, open/close, idle timeout, the
// writer), session.go (begin/end, session windows, transfers in several frames, ranged
// dispositions) and link.go (attach/detach, link credit). The IoT Hub nodes sit on top: cbs.go
// ($cbs put-token), service.go (/messages/devicebound and /messages/serviceBound/feedback) and
// device.go (/devices/{id}/messages/devicebound).
//
// # Concurrency
//
// One goroutine reads a connection's frames and handles them under the connection's mutex; frames
// going out are encoded under that mutex and queued for a writer goroutine, so no handler blocks on
// the network. Anything that waits on the store (a send's commit, a settle) runs in its own
// goroutine and reports back under the mutex. Calls into the hub that take the hub's delivery locks
// (Attach, Detach) are made with the mutex released, because the hub calls Deliver under them.
//
// # Authentication
//
// Like Azure: no SASL (the Node SDKs start with the AMQP header), SASL ANONYMOUS or MSSBCBS followed
// by CBS put-token, or SASL PLAIN with `{policy}@sas.root.{hub}` and a SAS token as password. A
// token's expiry is honoured: links that rely on a token detach with amqp:unauthorized-access when it
// expires unless a put-token renewed it. Rights are the HTTP API's: ServiceConnect for send and
// feedback, a device's key (or DeviceConnect) for its device-bound link.
package amqp
