package azureinterop

import (
	"bytes"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// A message with every field the service API can set, delivered to a connected SDK device and
// completed with client.complete: the device sees each field as sent; the hub reports Success in
// the message's status and in Azure's feedback record. The device's telemetry (sendEvent) is
// acknowledged on the way. Both SDK transports (azure-iot-device-mqtt
// 1.16.4 Mqtt over c2d-hub's --mqtts, MqttWs over its --wss).
func TestSDKReceivesAndCompletes(t *testing.T) {
	h := startHub(t)
	for _, transport := range []string{"mqtt", "mqttws"} {
		t.Run(transport, func(t *testing.T) {
			ctx := ctxT(t, 50*time.Second)
			dev := h.createDevice(t, ctx, "node-sdk-"+transport)
			d := startDevice(t, h, deviceOpts{connectionString: h.deviceConnectionString(dev, transport), transport: transport,
				settle: "complete", sendEvent: true})
			if ev := d.expect("open"); ev.Result != "Connected" {
				t.Fatalf("client.open resolved with %s, want Connected", ev.raw)
			}
			// Telemetry is accepted (PUBACK) and dropped: sendEvent resolves, the connection stays.
			if ev := d.expect("sent"); ev.Outcome != "resolved" || ev.Result != "MessageEnqueued" {
				t.Errorf("client.sendEvent: %s, want resolved with MessageEnqueued", ev.raw)
			}
			h.waitConnectionState(t, ctx, dev.DeviceID, "Connected")

			// Expiry with milliseconds, as an operator's tool would send it; property values use
			// every character that needs percent-encoding in a property bag.
			expiry := time.Now().Add(10 * time.Minute).UTC().Truncate(time.Millisecond)
			props := []iothub.AppProperty{
				{Name: "target", Value: "relay1"},
				{Name: "action", Value: "pulse"},
				{Name: "expr", Value: "a+b&c%d"},
				{Name: "cost", Value: "$5#1"},
				{Name: "marks", Value: "x'y*z^w`v|u~t!"},
				{Name: "empty", Value: ""},
				{Name: "Z-last", Value: "1"}, // order is the sender's, not sorted
			}
			body := []byte("{\"pin\":17,\"label\":\"caf\u00e9\"}\x00\xff")
			req := iothub.SendRequest{
				MessageID: "cmd:42@" + transport, CorrelationID: "job-7;batch=3", UserID: "ops@c2d",
				ExpiryTimeUTC: &expiry, Ack: iothub.AckFull,
				ContentType: "application/json", ContentEncoding: "utf-8",
				Properties: props, Body: body,
			}
			if _, err := h.Client.Send(ctx, dev.DeviceID, req); err != nil {
				t.Fatal(err)
			}

			got := d.expect("message")
			check := func(field, got, want string) {
				t.Helper()
				if got != want {
					t.Errorf("SDK message.%s = %q, want %q", field, got, want)
				}
			}
			check("messageId", got.MessageID, req.MessageID)
			check("correlationId", got.CorrelationID, req.CorrelationID)
			check("userId", got.UserID, req.UserID)
			check("to", got.To, "/devices/"+dev.DeviceID+"/messages/deviceBound")
			check("contentType", got.ContentType, req.ContentType)
			check("contentEncoding", got.ContentEncoding, req.ContentEncoding)
			if exp, err := time.Parse(time.RFC3339Nano, got.ExpiryTimeUTC); err != nil || !exp.Equal(expiry) {
				t.Errorf("SDK message.expiryTimeUtc = %q (%v), want %s", got.ExpiryTimeUTC, err, expiry.Format(time.RFC3339Nano))
			}
			// JavaScript's Date reads Azure's seven-digit fraction.
			check("expiryTimeUtc as Date", got.ExpiryParsed, expiry.Format("2006-01-02T15:04:05.000Z"))
			// The SDK has no ack field: iothub-ack arrives among message.properties (as it does from a
			// real Azure IoT Hub), first because the hub renders system keys before application ones.
			check("properties['iothub-ack']", got.Ack, "full")
			var app []iothub.AppProperty
			for _, p := range got.Properties {
				if p.Name == "iothub-ack" {
					continue
				}
				if strings.HasPrefix(p.Name, "$") {
					t.Errorf("SDK message.properties has %s=%q: a system/extension key leaked to a device that did not opt in", p.Name, p.Value)
				}
				app = append(app, p)
			}
			if !slices.Equal(app, props) {
				t.Errorf("SDK message.properties (without iothub-ack) =\n  %v\nwant, in order,\n  %v", app, props)
			}
			if !bytes.Equal(got.Body, body) {
				t.Errorf("SDK message body = %q, want %q", got.Body, body)
			}

			// client.complete over MQTT resolves at once (the SDK's Mqtt.complete is a no-op: the
			// PUBACK mqtt.js sent on receipt is what completes the message).
			if ev := d.expect("settled"); ev.Op != "complete" || ev.Outcome != "resolved" || ev.Result != "MessageCompleted" {
				t.Errorf("client.complete: %s, want resolved with MessageCompleted", ev.raw)
			}
			st := h.settled(t, ctx, dev.DeviceID, req.MessageID)
			if st.State != iothub.StateCompleted || st.Outcome != iothub.StatusSuccess || st.DeliveryCount != 1 {
				t.Errorf("hub status after client.complete: state %s outcome %s deliveries %d, want Completed Success 1", st.State, st.Outcome, st.DeliveryCount)
			}

			rec := h.feedbackFor(t, ctx, req.MessageID)
			// Azure's six fields, by their Azure names, in the raw JSON.
			for field, want := range map[string]string{
				"originalMessageId":  req.MessageID,
				"deviceId":           dev.DeviceID,
				"deviceGenerationId": dev.GenerationID,
				"statusCode":         "Success",
				"description":        "Success",
			} {
				if rec[field] != want {
					t.Errorf("feedback %s = %v, want %q (record %v)", field, rec[field], want, rec)
				}
			}
			if s, _ := rec["enqueuedTimeUtc"].(string); s == "" {
				t.Errorf("feedback enqueuedTimeUtc missing: %v", rec)
			} else if _, err := time.Parse(time.RFC3339Nano, s); err != nil {
				t.Errorf("feedback enqueuedTimeUtc %q: %v", s, err)
			}

			d.stop()
			h.waitConnectionState(t, ctx, dev.DeviceID, "Disconnected")
		})
	}
}

// The hub's queue carries messages to an SDK device that is offline: one sent before the device
// ever connected, and two sent after it had connected and closed (CleanSession=0, which the SDK
// always uses). They arrive when it connects, in the order sent.
func TestSDKReceivesWhatWasSentWhileOffline(t *testing.T) {
	h := startHub(t)
	ctx := ctxT(t, 50*time.Second)
	dev := h.createDevice(t, ctx, "node-sdk-offline")
	cs := h.deviceConnectionString(dev, "mqtt")
	send := func(mid string) {
		t.Helper()
		if _, err := h.Client.Send(ctx, dev.DeviceID, iothub.SendRequest{MessageID: mid, Ack: iothub.AckFull,
			Properties: []iothub.AppProperty{{Name: "n", Value: mid}}, Body: []byte(mid)}); err != nil {
			t.Fatal(err)
		}
	}
	receive := func(d *sdkDevice, mids ...string) {
		t.Helper()
		for _, mid := range mids {
			ev := d.expect("message")
			if ev.MessageID != mid || string(ev.Body) != mid {
				t.Fatalf("SDK received %s, want message %s next", ev.raw, mid)
			}
			if ev := d.expect("settled"); ev.Outcome != "resolved" {
				t.Fatalf("client.complete: %s", ev.raw)
			}
		}
	}

	send("before-first-connect")
	d := startDevice(t, h, deviceOpts{connectionString: cs, transport: "mqtt", settle: "complete"})
	d.expect("open")
	receive(d, "before-first-connect")
	d.stop()
	h.waitConnectionState(t, ctx, dev.DeviceID, "Disconnected")

	send("while-offline-1")
	send("while-offline-2")
	q, err := h.Client.Queue(ctx, dev.DeviceID)
	if err != nil {
		t.Fatal(err)
	}
	if len(q) != 2 || q[0].State != iothub.StateEnqueued || q[1].State != iothub.StateEnqueued {
		t.Fatalf("queue while the device is offline: %+v, want 2 Enqueued", q)
	}

	d = startDevice(t, h, deviceOpts{connectionString: cs, transport: "mqtt", settle: "complete"})
	d.expect("open")
	receive(d, "while-offline-1", "while-offline-2")
	for _, mid := range []string{"before-first-connect", "while-offline-1", "while-offline-2"} {
		if st := h.settled(t, ctx, dev.DeviceID, mid); st.Outcome != iothub.StatusSuccess || st.DeliveryCount != 1 {
			t.Errorf("%s: outcome %s after %d deliveries, want Success after 1", mid, st.Outcome, st.DeliveryCount)
		}
	}
	d.stop()
}

// Over MQTT the SDK cannot reject or abandon: client.reject and client.abandon reject their
// promise with NotImplementedError (azure-iot-device-mqtt's Mqtt.reject/abandon throw; the
// client's retry wrapper turns that into a rejection). mqtt.js has already sent the PUBACK when
// the application sees the message, and docs/protocol.md §5 (Azure) says a PUBACK completes it:
// the hub must report Success after one delivery and must not redeliver it.
func TestSDKRejectAndAbandonOverMQTT(t *testing.T) {
	h := startHub(t)
	for _, op := range []string{"reject", "abandon"} {
		t.Run(op, func(t *testing.T) {
			ctx := ctxT(t, 40*time.Second)
			dev := h.createDevice(t, ctx, "node-sdk-"+op)
			d := startDevice(t, h, deviceOpts{connectionString: h.deviceConnectionString(dev, "mqtt"), transport: "mqtt", settle: op})
			d.expect("open")
			mid := op + "-me"
			if _, err := h.Client.Send(ctx, dev.DeviceID, iothub.SendRequest{MessageID: mid, Ack: iothub.AckFull}); err != nil {
				t.Fatal(err)
			}
			if ev := d.expect("message"); ev.MessageID != mid {
				t.Fatalf("SDK received %s, want %s", ev.raw, mid)
			}
			ev := d.expect("settled")
			if ev.Op != op || ev.Outcome != "rejected" || ev.Error == nil || ev.Error.Name != "NotImplementedError" {
				t.Errorf("client.%s over MQTT: %s; azure-iot-device-mqtt %s documents a NotImplementedError", op, ev.raw, sdkTransportVersion)
			}
			st := h.settled(t, ctx, dev.DeviceID, mid)
			if st.State != iothub.StateCompleted || st.Outcome != iothub.StatusSuccess || st.DeliveryCount != 1 {
				t.Errorf("hub status after the SDK's PUBACK and a failed client.%s: state %s outcome %s deliveries %d, want Completed Success 1",
					op, st.State, st.Outcome, st.DeliveryCount)
			}
			if rec := h.feedbackFor(t, ctx, mid); rec["statusCode"] != "Success" {
				t.Errorf("feedback %v, want statusCode Success", rec)
			}
			q, err := h.Client.Queue(ctx, dev.DeviceID)
			if err != nil || len(q) != 0 {
				t.Errorf("queue after settling: %+v, %v; want empty (no redelivery)", q, err)
			}
			d.stop()
		})
	}
}

// The SDK signs its own SAS tokens from the device key (and takes a ready token from a
// SharedAccessSignature connection string); the hub accepts them. A wrong key, an expired token or
// an unknown device makes client.open fail promptly, with the hub's CONNACK refusal in the error —
// not a hang, not a retry loop — and the hub keeps no session for it.
//
// The SDK reports any failure of its first connection as an UnauthorizedError ("Failure on first
// connection (Not authorized): …", azure-iot-device-mqtt's connecting state), a refused TCP
// connection included, so the test checks the transport error: mqtt.js's "Connection refused:
// Bad username or password" (CONNACK 0x04) or "Not authorized" (0x05).
//
// A SharedAccessSignature connection string goes over MqttWs: the SDK builds that device's
// credentials from the token alone and drops GatewayHostName (SharedAccessSignature-
// AuthenticationProvider.fromSharedAccessSignature), so over Mqtt it could only dial port 8883.
func TestSDKAuthentication(t *testing.T) {
	h := startHub(t)
	ctx := ctxT(t, 50*time.Second)
	dev := h.createDevice(t, ctx, "node-sdk-auth")
	key := dev.Authentication.SymmetricKey.PrimaryKey
	withKey := func(id, key string) string {
		return iothub.DeviceConnectionString{HostName: h.Endpoints.HostName, DeviceID: id, SharedAccessKey: key,
			GatewayHostName: "localhost:" + port(h.Endpoints.MQTTS)}.String()
	}
	withToken := func(key string, expiry time.Time) string {
		t.Helper()
		tok, err := iothub.NewSASToken(h.Endpoints.HostName+"/devices/"+dev.DeviceID, key, "", expiry)
		if err != nil {
			t.Fatal(err)
		}
		return iothub.DeviceConnectionString{HostName: h.Endpoints.HostName, DeviceID: dev.DeviceID, SharedAccessSignature: tok}.String()
	}
	type tc struct{ name, cs, transport string }

	t.Run("accepted", func(t *testing.T) {
		for _, tc := range []tc{
			{"primary key", withKey(dev.DeviceID, key), "mqtt"},
			{"secondary key", withKey(dev.DeviceID, dev.Authentication.SymmetricKey.SecondaryKey), "mqtt"},
			{"SharedAccessSignature", withToken(key, time.Now().Add(time.Hour)), "mqttws"},
		} {
			d := startDevice(t, h, deviceOpts{connectionString: tc.cs, transport: tc.transport, settle: "complete"})
			if ev := d.next(20 * time.Second); ev.Event != "open" {
				t.Fatalf("%s: client.open: %s", tc.name, ev.raw)
			}
			d.stop()
		}
	})

	t.Run("refused", func(t *testing.T) {
		for _, tc := range []tc{
			{"wrong key", withKey(dev.DeviceID, "AAAA"+key[4:]), "mqtt"},
			{"unknown device", withKey("no-such-device", key), "mqtt"},
			{"expired token", withToken(key, time.Now().Add(-time.Minute)), "mqttws"},
		} {
			started := time.Now()
			d := startDevice(t, h, deviceOpts{connectionString: tc.cs, transport: tc.transport, settle: "complete"})
			ev := d.next(20 * time.Second)
			took := time.Since(started)
			if ev.Event != "open_error" || ev.Error == nil || ev.Error.Name != "UnauthorizedError" || ev.Error.TransportError == nil ||
				!(strings.Contains(ev.Error.TransportError.Message, "Connection refused: Bad username or password") ||
					strings.Contains(ev.Error.TransportError.Message, "Connection refused: Not authorized")) {
				t.Errorf("%s: client.open gave %s, want an UnauthorizedError from a CONNACK refusal", tc.name, ev.raw)
				continue
			}
			// No hang: the SDK does not retry an UnauthorizedError. Node's start-up is most of this.
			if took > 15*time.Second {
				t.Errorf("%s: client.open took %s to fail", tc.name, took)
			}
			select {
			case <-d.exited:
			case <-time.After(10 * time.Second):
				t.Fatalf("%s: device.js still running after open failed", tc.name)
			}
			t.Logf("%s: %s: %s (after %s)", tc.name, ev.Error.Name, ev.Error.Message, took.Round(time.Millisecond))
		}
		st, err := h.Client.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.ConnectedDeviceCount != 0 {
			t.Errorf("connectedDeviceCount %d after refused connections, want 0", st.ConnectedDeviceCount)
		}
	})
}

// A device in the field keeps one connection for months while its SAS tokens expire: the SDK
// renews its token (every 45 minutes by default) by disconnecting and connecting again with a new
// one, CleanSession=0. Shortened here to tokens valid 6 s renewed 3 s before expiry: after the
// first token has expired and the SDK has renewed twice, a message still reaches the device, and
// the application never saw a disconnect.
func TestSDKTokenRenewal(t *testing.T) {
	h := startHub(t)
	ctx := ctxT(t, 40*time.Second)
	dev := h.createDevice(t, ctx, "node-sdk-renewal")
	const valid = 6 * time.Second
	started := time.Now()
	d := startDevice(t, h, deviceOpts{connectionString: h.deviceConnectionString(dev, "mqtt"), transport: "mqtt",
		settle: "complete", tokenRenewal: "6,3"})
	d.expect("open")

	const connected = `c2d_device_connection_changes_total{event="connected"}`
	deadline := time.Now().Add(20 * time.Second)
	for h.metric(t, ctx, connected) < 3 || time.Since(started) < valid+time.Second {
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v after 20s, want >= 3 (the first connection and two token renewals)", connected, h.metric(t, ctx, connected))
		}
		time.Sleep(100 * time.Millisecond) // polling the hub's metrics, with a deadline
	}
	if _, err := h.Client.Send(ctx, dev.DeviceID, iothub.SendRequest{MessageID: "after-renewal", Ack: iothub.AckFull}); err != nil {
		t.Fatal(err)
	}
	if ev := d.expect("message"); ev.MessageID != "after-renewal" { // a "disconnect" event fails here too
		t.Fatalf("SDK: %s, want message after-renewal", ev.raw)
	}
	d.expect("settled")
	if st := h.settled(t, ctx, dev.DeviceID, "after-renewal"); st.Outcome != iothub.StatusSuccess || st.DeliveryCount != 1 {
		t.Errorf("after-renewal: outcome %s after %d deliveries, want Success after 1", st.Outcome, st.DeliveryCount)
	}
	d.stop()
}

// Device ids with the punctuation Azure allows reach the SDK device: the SDK puts the id raw in
// its client id, username, token resource (percent-encoded there) and subscription filter.
//
// Not covered, because they cannot work with this SDK: ids containing '+' or '#' (mqtt.js refuses
// the SDK's own filter `devices/a+b/messages/devicebound/#` client-side: "Invalid topic"), and ids
// containing '%': the SDK subscribes to `devices/a%b/messages/devicebound/#` with the '%' raw,
// c2d-hub answers SUBACK 0x80 (it expects `a%25b`, docs/protocol.md §3.1), mqtt.js reports no error
// for a 0x80 grant, and the device silently receives nothing while its messages stay queued.
func TestSDKDeviceIDPunctuation(t *testing.T) {
	h := startHub(t)
	for _, id := range []string{"n@m.et", "x(1)!*,=$'", "q?r", "pi-7.kitchen_2"} {
		t.Run(id, func(t *testing.T) {
			ctx := ctxT(t, 30*time.Second)
			dev := h.createDevice(t, ctx, id)
			if _, err := h.Client.Send(ctx, id, iothub.SendRequest{MessageID: "hello", Ack: iothub.AckFull}); err != nil {
				t.Fatal(err)
			}
			d := startDevice(t, h, deviceOpts{connectionString: h.deviceConnectionString(dev, "mqtt"), transport: "mqtt", settle: "complete"})
			d.expect("open")
			if ev := d.expect("message"); ev.MessageID != "hello" || ev.To != "/devices/"+id+"/messages/deviceBound" {
				t.Fatalf("SDK device %q received %s", id, ev.raw)
			}
			d.expect("settled")
			if st := h.settled(t, ctx, id, "hello"); st.Outcome != iothub.StatusSuccess {
				t.Errorf("outcome %s, want Success", st.Outcome)
			}
			d.stop()
		})
	}
}
