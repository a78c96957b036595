package attack

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// Issue #17, Medium: a property value of 30,000 '%' percent-encodes to a 90,069-byte topic; MQTT's
// 16-bit topic length wrapped, the agent rejected the malformed PUBLISH without a lock token and
// the hub redelivered it until DeliveryCountExceeded. Now the send is refused with 400 and the
// size, and a message just under the limit still goes through.
func TestUnencodableMessageRefusedAtSend(t *testing.T) {
	h := startHub(t, "")
	device(t, h, "topic-dev")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := h.Client.Send(ctx, "topic-dev", iothub.SendRequest{
		Properties: []iothub.AppProperty{{Name: "target", Value: strings.Repeat("%", 30000)}},
	})
	var ie *iothub.Error
	if !errors.As(err, &ie) || ie.Code.HTTPStatus() != 400 || !strings.Contains(err.Error(), "bytes") || !strings.Contains(err.Error(), "65535") {
		t.Fatalf("send of a 90 KB topic: %v, want 400 saying its size and MQTT's limit", err)
	}
	if q, err := h.Client.Queue(ctx, "topic-dev"); err != nil || len(q) != 0 {
		t.Fatalf("queue after the refused send: %v %v, want empty", q, err)
	}
	// 20,000 '%' → 60,000 bytes plus the system properties: deliverable, accepted.
	if _, err := h.Client.Send(ctx, "topic-dev", iothub.SendRequest{
		Properties: []iothub.AppProperty{{Name: "target", Value: strings.Repeat("%", 20000)}},
	}); err != nil {
		t.Fatalf("send of a 60 KB topic: %v", err)
	}
}
