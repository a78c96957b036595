// Package e2e tests the real c2d-agent binary against the real c2d-hub binary: the hub's MQTT over
// TLS with its generated CA, the disposition extension, reasons in feedback, offline delivery,
// redelivery and SIGTERM. Both binaries are built in TestMain.
package e2e
