package broker_test

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/broker"
	"github.com/c2d-project/c2d/cloud/broker/internal/mochi/packets"
)

// An MQTT 5 client is refused with 0x84 and, since MQTT 5 CONNACKs carry one, a reason string
// (property 0x1F) saying why; a 3.1.1 CONNACK has no properties at all.
func TestMQTT5RefusalCarriesReasonString(t *testing.T) {
	e := newEnv(t, envOpt{})
	c, err := net.Dial("tcp", e.b.Addr(broker.ListenerMQTT))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(wait))
	// CONNECT, protocol level 5, clean start, keep-alive 60, no properties, client id "x".
	if _, err := c.Write([]byte{0x10, 0x0e, 0, 4, 'M', 'Q', 'T', 'T', 5, 0x02, 0, 60, 0, 0, 1, 'x'}); err != nil {
		t.Fatal(err)
	}
	head := make([]byte, 2)
	if _, err := io.ReadFull(c, head); err != nil || head[0] != 0x20 || head[1] > 127 {
		t.Fatalf("CONNACK header % x, %v", head, err)
	}
	body := make([]byte, head[1])
	if _, err := io.ReadFull(c, body); err != nil {
		t.Fatalf("CONNACK body: %v", err)
	}
	reason := packets.ErrUnsupportedProtocolVersion.Reason
	want := append([]byte{0x1F, 0, byte(len(reason))}, reason...)
	if body[1] != 0x84 || !bytes.Contains(body, want) {
		t.Fatalf("CONNACK body % x, want reason 0x84 with reason string %q", body, reason)
	}
}
