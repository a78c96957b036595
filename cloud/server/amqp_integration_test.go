package server_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"testing"
	"time"

	goamqp "github.com/Azure/go-amqp"
	"github.com/gorilla/websocket"

	"github.com/c2d-project/c2d/cloud/amqp"
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

// AMQP over WebSockets on the HTTPS listener at /$iothub/websocket (subprotocol AMQPWSB10), as
// Azure's AmqpWs transports connect; the HTTP API keeps answering on the same port.
func TestAMQPOverWebSocketsOnHTTPS(t *testing.T) {
	h := newITHub(t, func(c *server.Config) { c.Listen.HTTPS = "127.0.0.1:0" })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ep := h.s.Endpoints()
	pem, err := os.ReadFile(ep.CA)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	d := websocket.Dialer{Subprotocols: []string{amqp.WebSocketProtocol}, TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "localhost"}}
	ws, _, err := d.DialContext(ctx, "wss://"+ep.HTTPS+amqp.WebSocketPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := goamqp.NewConn(ctx, amqp.WebSocketConn(ws), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	sess, err := conn.NewSession(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Unauthenticated: the send link is refused with amqp:unauthorized-access, so the server answered.
	var ae *goamqp.Error
	if _, err := sess.NewSender(ctx, "/messages/devicebound", nil); !errors.As(err, &ae) || ae.Condition != "amqp:unauthorized-access" {
		t.Fatalf("attach over wss: %v, want amqp:unauthorized-access", err)
	}
	if n := h.metric("c2d_amqp_connections"); n != 1 {
		t.Errorf("c2d_amqp_connections = %v with one WebSocket connection open", n)
	}
	resp, err := (&http.Client{Transport: &http.Transport{TLSClientConfig: d.TLSClientConfig}}).Get("https://" + ep.HTTPS + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/healthz beside the WebSocket endpoint: %d", resp.StatusCode)
	}
}
