// Package azureinterop proves, with Azure's official Node.js SDKs, the promise that "devices built
// on Azure's official device SDKs can talk to c2d-hub" — and that services built on Azure's service
// SDK can call them. It has no code of its own: its tests build the real c2d-hub, install the SDKs
// from the npm registry (versions pinned by testdata/sdk-device/package-lock.json and
// testdata/sdk-service/package-lock.json) into a temporary directory, and run
// testdata/sdk-device/device.js (an ordinary device application: C2D messages, direct methods
// with onDeviceMethod, the twin with getTwin, desired events and reported updates) and
// testdata/sdk-service/twin-service.js (Client.invokeDeviceMethod, Registry.getTwin/updateTwin over
// HTTPS) against the hub.
//
// Tested: azure-iot-device 1.18.4 with azure-iot-device-mqtt 1.16.4 (mqtt.js 4.3.8), transports
// Mqtt (MQTT over TLS) and MqttWs (MQTT over secure WebSockets), on Node.js 20. The service side
// (service_test.go, testdata/sdk-service/service.js): azure-iothub 1.16.6 — Registry create, get,
// list, update, delete over HTTPS, Client.send with ack full and getFeedbackReceiver over AMQP —
// with the device on azure-iot-device-amqp 1.14.4 (complete, reject, abandon), both sides over
// AMQP over WebSockets, or the device on MQTT.
//
// The tests need node and npm (Debian: nodejs npm) and the npm registry for `npm ci`.
package azureinterop
