package broker

import (
	"strings"
	"testing"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// MQTT's topic length field is 16 bits: a delivery whose topic is exactly 65535 bytes is written,
// one byte more is refused (never a length that wraps).
func TestDeliverTopicLengthLimitIsExact(t *testing.T) {
	msg := func(n int) *iothub.Message {
		return &iothub.Message{MessageID: "m", LockToken: "lt", Properties: []iothub.AppProperty{{Name: "p", Value: strings.Repeat("a", n)}}}
	}
	base := len(iothub.DeliveryTopic("d", msg(0), false))
	exact := msg(iothub.MaxTopicLength - base)
	if got := len(iothub.DeliveryTopic("d", exact, false)); got != iothub.MaxTopicLength {
		t.Fatalf("test set-up: topic of %d bytes, want %d", got, iothub.MaxTopicLength)
	}
	// wrunning: no writer is started, so what was queued stays in c.wq to be counted.
	c := &conn{deviceID: "d", attached: true, wrunning: true, pending: map[uint16]pendingDelivery{}}
	if err := c.Deliver(exact); err != nil {
		t.Fatalf("topic of exactly %d bytes: %v", iothub.MaxTopicLength, err)
	}
	if err := c.Deliver(msg(iothub.MaxTopicLength - base + 1)); err == nil {
		t.Fatalf("topic of %d bytes delivered", iothub.MaxTopicLength+1)
	}
	if len(c.wq) != 1 {
		t.Fatalf("%d packets queued, want 1", len(c.wq))
	}
}
