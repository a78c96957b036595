package broker

import (
	mqtt "github.com/c2d-project/c2d/cloud/broker/internal/mochi"
	"github.com/c2d-project/c2d/cloud/broker/internal/mochi/packets"
)

// v311Hook keeps mochi inside MQTT 3.1.1 for 3.1.1 clients (issue #17): mochi sends a server
// DISCONNECT, which 3.1.1 does not have, to a session taken over by a new connection and to a
// client whose QoS 1 PUBLISH the ACL refused, and it can put MQTT 5 reason codes (0x80, 0x82,
// 0x9b) in a 3.1.1 CONNACK. Here the connection is closed instead (what 3.1.1 prescribes), and a
// CONNACK carries only 3.1.1 return codes.
type v311Hook struct {
	mqtt.HookBase
	b *Broker
}

func (h *v311Hook) ID() string { return "c2d-mqtt311" }

func (h *v311Hook) Provides(b byte) bool {
	return b == mqtt.OnSessionEstablish || b == mqtt.OnPacketEncode || b == mqtt.OnPacketRead
}

// OnSessionEstablish runs before mochi takes the client id over from an existing connection:
// closing that one first leaves mochi's DISCONNECT nowhere to go (WritePacket on a closed client
// writes nothing). The hand-over itself is unchanged.
func (h *v311Hook) OnSessionEstablish(cl *mqtt.Client, _ packets.Packet) {
	h.b.mu.RLock()
	srv := h.b.srv
	h.b.mu.RUnlock()
	if srv == nil {
		return
	}
	if old, ok := srv.Clients.Get(cl.ID); ok && old != cl && old.Properties.ProtocolVersion < 5 {
		old.Stop(packets.ErrSessionTakenOver)
	}
}

// OnPacketRead closes the connection of a 3.1.1 client whose QoS 1 PUBLISH the ACL refuses (3.1.1
// has no negative PUBACK) before mochi would answer it with a DISCONNECT.
func (h *v311Hook) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Type != packets.Publish || pk.FixedHeader.Qos != 1 || cl.Properties.ProtocolVersion >= 5 {
		return pk, nil
	}
	if c := h.b.connOf(cl); c == nil || !c.mayPublish(pk.TopicName) {
		h.b.log.Info("closing connection: QoS 1 PUBLISH to a topic the device may not publish to",
			"client", cl.ID, "remote", cl.Net.Remote, "topic", pk.TopicName)
		return pk, packets.ErrRejectPacket
	}
	return pk, nil
}

// OnPacketEncode gives a 3.1.1 CONNACK a 3.1.1 return code: 0x80 (mochi's answer to an empty
// client id with CleanSession=0) becomes 0x02 identifier rejected, any other MQTT 5 code 0x05 not
// authorized.
func (h *v311Hook) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type != packets.Connack || cl.Properties.ProtocolVersion >= 5 || pk.ReasonCode <= 0x05 {
		return pk
	}
	if pk.ReasonCode == packets.ErrUnspecifiedError.Code {
		pk.ReasonCode = packets.Err3ClientIdentifierNotValid.Code
	} else {
		pk.ReasonCode = packets.Err3NotAuthorized.Code
	}
	return pk
}
