package amqp

import (
	"fmt"
	"testing"

	"github.com/c2d-project/c2d/cloud/amqp/internal/encoding"
	"github.com/c2d-project/c2d/cloud/amqp/internal/frames"
	"github.com/c2d-project/c2d/cloud/hub"
	"github.com/c2d-project/c2d/cloud/iothub"
)

// A node exists only in the direction IoT Hub has it: a device's node
// /devices/{id}/messages/devicebound is one the device receives from, and a device's other nodes
// are not the hub's, so a peer that attaches to send to either gets amqp:not-found (§2.6.3, the
// attach answered without a terminus and then detached), not a demand for credentials.
func TestNodesExistOnlyInTheirDirection(t *testing.T) {
	for _, addr := range []string{"/devices/d1/messages/devicebound", "/devices/d1/messages/events"} {
		h := newFlowHarness(t, encoding.RoleSender)
		h.begin(10)
		h.peer(&frames.PerformAttach{Name: "x", Handle: 0, Role: encoding.RoleSender,
			Source: &frames.Source{Address: "client"}, Target: &frames.Target{Address: addr}})
		var cond encoding.ErrCond
		for _, fb := range h.sent() {
			if d, ok := fb.(*frames.PerformDetach); ok && d.Error != nil {
				cond = d.Error.Condition
			}
		}
		if cond != condNotFound {
			t.Errorf("a sender attaching to %s: detach condition %q, want %q", addr, cond, condNotFound)
		}
	}
}

// A refused send carries Azure's numeric error code in the error's info only when the hub gave
// one (an iothub error); other refusals, such as an unknown device, carry the condition alone.
func TestRejectedSendInfoOnlyForIoTHubErrors(t *testing.T) {
	big := rejected(fmt.Errorf("send: %w", &iothub.Error{Code: iothub.CodeMessageTooLarge, Detail: "too large"}))
	if big.Error.Condition != condMessageSize || big.Error.Info["iothub-status"] != int32(iothub.CodeMessageTooLarge) || big.Error.Info["iothub-errorcode"] != "MessageTooLarge" {
		t.Fatalf("a message too large: %+v, want message-size-exceeded with iothub-status 413001 and iothub-errorcode MessageTooLarge", big.Error)
	}
	gone := rejected(fmt.Errorf("send: %w", hub.ErrDeviceNotFound))
	if gone.Error.Condition != condNotFound || gone.Error.Info != nil {
		t.Fatalf("an unknown device: %+v, want not-found without info", gone.Error)
	}
}
