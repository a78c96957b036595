// Package methods is c2d-hub's direct methods (Azure's synchronous request/response to one
// connected device): the service asks through `POST /twins/{id}/methods`, Service.Invoke publishes
// `$iothub/methods/POST/{name}/?$rid={rid}` to the device's current MQTT session (through a
// Transport, the broker) and waits for `$iothub/methods/res/{status}/?$rid={rid}`.
//
// Methods are never queued and never stored: a device that is not connected with the methods
// subscription fails at once with 404103 DeviceNotOnline, unless the request's
// connectTimeoutInSeconds asks to wait for it to connect; a device that does not answer within
// responseTimeoutInSeconds ends in 504101 GatewayTimeout — the hub ends the call itself, since
// Azure's service SDKs never time out on their own. A late answer is logged and dropped.
//
// The package depends only on the hub core (to tell an unknown device, 404001, from an offline
// one) and the wire contract in cloud/iothub; the broker reports sessions and answers through
// MethodsReady and MethodResponse.
//
// In a cluster (route.go) a call for a device whose session is on another node is passed to that
// node's service API (one HTTP hop, marked with iothub.ForwardedHeader so it is never passed on
// again) and its answer returned unchanged.
package methods
