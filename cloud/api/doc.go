// Package api is c2d-hub's HTTP service API (docs/api.md): the registry, cloud-to-device sends,
// queue inspection and purge, delivery feedback, hub statistics, /healthz and Prometheus /metrics.
//
// Every route except /healthz and /metrics is authenticated exactly like Azure IoT Hub's REST API:
// a shared access policy's SAS token in the Authorization header, and the policy must grant the
// route's permission. Failures are JSON bodies in Azure's error form (iothub.ErrorResponse) with
// Azure's codes. Long-polls (message status, feedback) are bounded to MaxWait and end early when
// the client goes away or the server drains for shutdown.
//
// The handlers hold no state of their own: the hub core (cloud/hub) is the source of truth.
package api
