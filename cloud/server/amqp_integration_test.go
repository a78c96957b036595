package server_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	goamqp "github.com/Azure/go-amqp"

	"github.com/c2d-project/c2d/cloud/iothub"
	"github.com/c2d-project/c2d/cloud/server"
)

// One hub core behind every protocol: sent over AMQP, received over MQTT, feedback over HTTP; and
// sent over HTTP, received on an AMQP device link, feedback over AMQP.
func TestMixedProtocolPaths(t *testing.T) {
	h := newITHub(t, func(c *server.Config) {
		c.Listen.AMQP = "127.0.0.1:0"
		c.Queue.LockTimeout = server.Duration(time.Minute)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	addr := h.s.Endpoints().AMQP
	svc := h.connectionString("service")

	mq := h.device("mqtt-dev")
	d := h.connect(mq, devOpts{})
	conn, snd := amqpSender(t, addr, svc)
	defer conn.Close()
	to := "/devices/mqtt-dev/messages/devicebound"
	if err := snd.Send(ctx, &goamqp.Message{
		Properties:            &goamqp.MessageProperties{MessageID: "amqp-to-mqtt", To: &to},
		ApplicationProperties: map[string]any{"iothub-ack": "full", "led": "on"},
		Data:                  [][]byte{[]byte("hello")},
	}, nil); err != nil {
		t.Fatal(err)
	}
	m := d.next()
	if v, _ := m.Property("led"); m.MessageID != "amqp-to-mqtt" || string(m.Body) != "hello" || v != "on" {
		t.Fatalf("MQTT device got %+v", m)
	}
	fb, err := h.client("service").ReceiveFeedback(ctx, 10*time.Second)
	if err != nil || fb == nil || len(fb.Records) != 1 || fb.Records[0].OriginalMessageID != "amqp-to-mqtt" || fb.Records[0].StatusCode != iothub.StatusSuccess {
		t.Fatalf("HTTP feedback %+v %v", fb, err)
	}
	if err := h.client("service").CompleteFeedback(ctx, fb.LockToken); err != nil {
		t.Fatal(err)
	}

	ad := h.device("amqp-dev")
	h.send("amqp-dev", iothub.SendRequest{MessageID: "http-to-amqp", Ack: iothub.AckFull, Body: []byte("x")})
	dconn, dsess := amqpSession(t, addr, svc) // the service policy lacks DeviceConnect: refused
	defer dconn.Close()
	if _, err := dsess.NewReceiver(ctx, "/devices/amqp-dev/messages/devicebound", nil); err == nil {
		t.Fatal("device link authorized by the service policy")
	}
	tok, err := iothub.NewSASToken(iothub.DeviceResource(itHost, "amqp-dev", ""), ad.Authentication.SymmetricKey.PrimaryKey, "", time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	devConn, devSess := amqpSessionToken(t, addr, itHost+"%2Fdevices%2Famqp-dev", tok)
	defer devConn.Close()
	rcv, err := devSess.NewReceiver(ctx, "/devices/amqp-dev/messages/devicebound", nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := rcv.Receive(ctx, nil)
	if err != nil || got.Properties.MessageID != "http-to-amqp" {
		t.Fatalf("AMQP device got %+v %v", got, err)
	}
	if err := rcv.RejectMessage(ctx, got, &goamqp.Error{Condition: "amqp:internal-error", Description: "no such pin"}); err != nil {
		t.Fatal(err)
	}
	fr, err := dsess.NewReceiver(ctx, "/messages/serviceBound/feedback", nil)
	if err != nil {
		t.Fatal(err)
	}
	fm, err := fr.Receive(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	var recs []iothub.FeedbackRecord
	if err := json.Unmarshal(fm.GetData(), &recs); err != nil || len(recs) != 1 || recs[0].StatusCode != iothub.StatusRejected || recs[0].Reason != "no such pin" {
		t.Fatalf("AMQP feedback %s (%v)", fm.GetData(), err)
	}
	if err := fr.AcceptMessage(ctx, fm); err != nil {
		t.Fatal(err)
	}
}
