// Command c2d-hub is the self-hosted cloud-to-device hub: `c2d-hub serve` runs it,
// `c2d-hub connection-string` prints a policy's connection string. See docs/api.md and
// configs/hub.yaml.
package main
