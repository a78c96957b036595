// Command c2d-agent runs on the board under systemd: it turns cloud-to-device messages into GPIO/LED
// actions and completes or rejects each one. See docs/agent.md.
//
//	c2d-agent --config /etc/c2d/agent.yaml      run
//	c2d-agent check-config [--hardware] FILE    validate and print the resolved config
//	c2d-agent --version
package main
