package amqp

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	goamqp "github.com/Azure/go-amqp"
	"github.com/gorilla/websocket"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// AMQP over WebSockets (subprotocol AMQPWSB10), as Azure's AmqpWs transports open it: a device
// receives and rejects with a reason, which the hub keeps.
func TestWebSocketDeviceReject(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	h, hs := wsHub(t)

	// Without the subprotocol: closed with a protocol error naming it.
	plain, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(hs.URL, "http")+WebSocketPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = plain.ReadMessage()
	if !websocket.IsCloseError(err, websocket.CloseProtocolError) || !strings.Contains(err.Error(), WebSocketProtocol) {
		t.Fatalf("websocket without %s: %v, want a protocol-error close naming it", WebSocketProtocol, err)
	}
	_ = plain.Close()

	dev, _, err := h.PutDevice(ctx, iothub.Device{DeviceID: "ws-dev"}, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Send(ctx, "ws-dev", iothub.SendRequest{MessageID: "m1", Ack: iothub.AckFull, Body: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	s := wsSession(ctx, t, hs, nil, "hub.test/devices/ws-dev", dev.Authentication.SymmetricKey.PrimaryKey, "")
	rcv, err := s.NewReceiver(ctx, "/devices/ws-dev/messages/devicebound", nil)
	if err != nil {
		t.Fatal(err)
	}
	m, err := rcv.Receive(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := rcv.RejectMessage(ctx, m, &goamqp.Error{Condition: "amqp:internal-error", Description: "pin 4 is not an output"}); err != nil {
		t.Fatal(err)
	}
	st, err := h.WaitSettled(ctx, "ws-dev", "m1")
	if err != nil || st.Outcome != iothub.StatusRejected || st.Reason != "pin 4 is not an output" {
		t.Fatalf("after reject: %+v %v", st, err)
	}
	// The device's token covers only its own queue.
	var ae *goamqp.Error
	if _, err := s.NewReceiver(ctx, "/devices/other/messages/devicebound", nil); !errors.As(err, &ae) || ae.Condition != "amqp:unauthorized-access" {
		t.Fatalf("receive for another device with ws-dev's token: %v, want amqp:unauthorized-access", err)
	}
}

func cbsPut(t *testing.T, s *goamqp.Session, audience, token string) (int32, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	snd, err := s.NewSender(ctx, "$cbs", nil)
	if err != nil {
		t.Fatal(err)
	}
	rcv, err := s.NewReceiver(ctx, "$cbs", nil)
	if err != nil {
		t.Fatal(err)
	}
	replyTo := "cbs"
	if err := snd.Send(ctx, &goamqp.Message{
		Properties: &goamqp.MessageProperties{MessageID: "1", ReplyTo: &replyTo},
		ApplicationProperties: map[string]any{
			"operation": "put-token", "type": "servicebus.windows.net:sastoken", "name": audience,
		},
		Value: token,
	}, nil); err != nil {
		t.Fatal(err)
	}
	rep, err := rcv.Receive(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	code, _ := rep.ApplicationProperties["status-code"].(int32)
	desc, _ := rep.ApplicationProperties["status-description"].(string)
	return code, desc
}
