package broker_test

import (
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// Azure delivers cloud-to-device messages only to a session subscribed to
// devices/{id}/messages/devicebound/#: a device that subscribed to something else (its twin
// responses) is not receiving, and its queue must wait for it rather than lock messages the device
// never asked for (docs/protocol.md §3).
func TestOtherSubscriptionDoesNotStartDelivery(t *testing.T) {
	e := newEnv(t, envOpt{})
	d := e.device("pi-twin-only")
	cl := e.connect(d, clientOpts{clean: true})
	if g := cl.subscribe("$iothub/twin/res/#", 0); g != 0 {
		t.Fatalf("twin subscribe granted 0x%02x", g)
	}
	res := e.send("pi-twin-only", iothub.SendRequest{Body: []byte("not yet")})
	cl.none(150 * time.Millisecond)
	if st := e.status("pi-twin-only", res.MessageID); st.State != iothub.StateEnqueued {
		t.Fatalf("message with no device-bound subscription: state %q, want %q", st.State, iothub.StateEnqueued)
	}
	cl.subscribeC2D("pi-twin-only")
	if _, msg := cl.next(); msg.MessageID != res.MessageID {
		t.Fatalf("got %q, want %q", msg.MessageID, res.MessageID)
	}
}
