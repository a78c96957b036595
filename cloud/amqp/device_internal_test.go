package amqp

import (
	"testing"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// A delivery to a device link that has detached, or on a connection that is ending, is refused
// (the hub then returns the message to the queue at once instead of waiting out its lock), and
// nothing is queued on the link.
func TestDeliverRefusedOnDetachedLinkOrEndingConnection(t *testing.T) {
	for _, tc := range []struct {
		name             string
		detached, ending bool
	}{{"detached link", true, false}, {"ending connection", false, true}} {
		t.Run(tc.name, func(t *testing.T) {
			c := &conn{ending: tc.ending}
			l := &link{detached: tc.detached}
			d := &deviceLink{conn: c, id: "d", link: l}
			if err := d.Deliver(&iothub.Message{MessageID: "m", LockToken: "t1", To: iothub.DeviceBoundTo("d")}); err == nil {
				t.Fatal("Deliver succeeded")
			}
			if len(l.queue) != 0 {
				t.Fatalf("%d deliveries queued on the link", len(l.queue))
			}
		})
	}
}
