package attack

import (
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"
)

// readUntilClosed returns every byte the hub sends on c until it closes it (or d passes: ok false).
func readUntilClosed(c net.Conn, d time.Duration) (got []byte, ok bool) {
	_ = c.SetReadDeadline(time.Now().Add(d))
	b, err := io.ReadAll(c)
	if ne, isNet := err.(net.Error); isNet && ne.Timeout() {
		return b, false
	}
	return b, true
}

// Issue #17, Low: MQTT 3.1.1 has no server DISCONNECT, but the hub sent one (e0 00) to a session
// taken over by a new connection and to a client whose QoS 1 PUBLISH it refused. Now it just
// closes those connections.
func TestNoServerDisconnectFor311(t *testing.T) {
	h := startHub(t, "")
	cs := device(t, h, "v311-dev")

	rc, first, err := deviceConnect(t, h.Endpoints.MQTT, cs)
	if err != nil || rc != 0 {
		t.Fatalf("CONNECT: %#x %v", rc, err)
	}
	defer first.Close()
	rc, second, err := deviceConnect(t, h.Endpoints.MQTT, cs) // same client id: takes the session over
	if err != nil || rc != 0 {
		t.Fatalf("second CONNECT: %#x %v", rc, err)
	}
	defer second.Close()
	if got, ok := readUntilClosed(first, 10*time.Second); !ok || len(got) != 0 {
		t.Errorf("the taken-over connection got % x (closed: %v); want it closed with nothing sent", got, ok)
	}

	// A QoS 1 PUBLISH to another device's events topic, or to $SYS (protocol.md §2: a refused
	// QoS 1 PUBLISH closes the connection): closed, no DISCONNECT, no silent hang.
	for i, topic := range []string{"devices/someone-else/messages/events/", "$SYS/broker/clients"} {
		c := second
		if i > 0 {
			if rc, c, err = deviceConnect(t, h.Endpoints.MQTT, cs); err != nil || rc != 0 {
				t.Fatalf("CONNECT: %#x %v", rc, err)
			}
			defer c.Close()
		}
		body := binary.BigEndian.AppendUint16(nil, uint16(len(topic)))
		body = append(append(body, topic...), 0, 1, 'x') // packet id 1, payload "x"
		if _, err := c.Write(append([]byte{0x32, byte(len(body))}, body...)); err != nil {
			t.Fatal(err)
		}
		if got, ok := readUntilClosed(c, 10*time.Second); !ok || len(got) != 0 {
			t.Errorf("after a refused QoS 1 PUBLISH to %s the hub sent % x (closed: %v); want the connection closed with nothing sent", topic, got, ok)
		}
	}
}

// Issue #17, Low: a 3.1.1 CONNACK carries only 3.1.1 return codes (mochi answered an empty client
// id with CleanSession=0 with MQTT 5's 0x80).
func TestConnack311CodesOnly(t *testing.T) {
	h := startHub(t, "")
	// CONNECT, CleanSession=0, empty client id, no credentials.
	body := append([]byte{0, 4, 'M', 'Q', 'T', 'T', 4, 0x00, 0, 60}, 0, 0)
	rc, c, err := connack(h.Endpoints.MQTT, append([]byte{0x10, byte(len(body))}, body...))
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if rc != 0x02 {
		t.Errorf("CONNACK %#x for an empty client id with CleanSession=0, want 0x02 (identifier rejected)", rc)
	}
}
