package iothub

import (
	"errors"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"
)

// Delivery topics copied verbatim from outside our code: captures of real Azure IoT Hub deliveries
// quoted in public issues and samples, and the official SDKs' unit tests.
func TestParseDeviceBoundTopicAzureVectors(t *testing.T) {
	cases := []struct {
		source string
		topic  string
		dev    string
		want   Message
	}{
		{"real hub, portal send (amenzhinsky/iothub#68)",
			"devices/mydevice/messages/devicebound/%24.to=%2Fdevices%2Fmydevice%2Fmessages%2FdeviceBound&%24.ct=text%2Fplain%3B%20charset%3DUTF-8&%24.ce=utf-8",
			"mydevice", Message{To: "/devices/mydevice/messages/deviceBound", ContentType: "text/plain; charset=UTF-8", ContentEncoding: "utf-8"}},
		{"real hub, IoT Central command",
			"devices/264hjjv1hqf/messages/devicebound/%24.exp=2020-07-25T14%3A14%3A25.1720000Z&%24.mid=Commands%3Ac2d-Fr7guTmpM&%24.to=%2Fdevices%2F264hjjv1hqf%2Fmessages%2Fdevicebound&iothub-ack=none&method-name=Commands%3Ac2d",
			"264hjjv1hqf", Message{
				ExpiryTime: time.Date(2020, 7, 25, 14, 14, 25, 172000000, time.UTC), MessageID: "Commands:c2d-Fr7guTmpM",
				To: "/devices/264hjjv1hqf/messages/devicebound", Ack: AckNone,
				Properties: []AppProperty{{"method-name", "Commands:c2d"}}}},
		{"real hub, serial log of a C SDK sample",
			"devices/my-device-1/messages/devicebound/%24.mid=84c08717-2be1-404c-9e5d-62f4565ca58b&%24.to=%2Fdevices%2Fmy-device-1%2Fmessages%2FdeviceBound&iothub-ack=full",
			"my-device-1", Message{MessageID: "84c08717-2be1-404c-9e5d-62f4565ca58b", To: "/devices/my-device-1/messages/deviceBound", Ack: AckFull}},
		{"Python SDK test",
			"devices/fake_device/messages/devicebound/%24.exp=3237-07-19T23%3A06%3A40.0000000Z&%24.cid=fake_corid&%24.mid=6b822696-f75a-46f5-8b02-0680db65abf5&%24.to=%2Fdevices%2Ffake_device%2Fmessages%2Fdevicebound&%24.ct=fake_content_type&%24.ce=utf-8",
			"fake_device", Message{ExpiryTime: time.Date(3237, 7, 19, 23, 6, 40, 0, time.UTC), CorrelationID: "fake_corid",
				MessageID: "6b822696-f75a-46f5-8b02-0680db65abf5", To: "/devices/fake_device/messages/devicebound",
				ContentType: "fake_content_type", ContentEncoding: "utf-8"}},
		{"Java SDK test ($.exp=0)",
			"devices/deviceID/messages/devicebound/%24.mid=69ea4caf-d83e-454b-81f2-caafda4c81c8&%24.exp=0&%24.to=%2Fdevices%2FdeviceID%2Fmessages%2FdeviceBound&%24.cid=169c34b3-99b0-49f9-b0f6-8fa9d2c99345&iothub-ack=full&property1=value1",
			"deviceID", Message{MessageID: "69ea4caf-d83e-454b-81f2-caafda4c81c8", To: "/devices/deviceID/messages/deviceBound",
				CorrelationID: "169c34b3-99b0-49f9-b0f6-8fa9d2c99345", Ack: AckFull, Properties: []AppProperty{{"property1", "value1"}}}},
		{"C SDK test (ack=Full, null $.cid/$.uid)",
			"devices/thisIsDeviceID/messages/devicebound/iothub-ack=Full&propName=PropValue&DeviceInfo=smokeTest&%24.to=%2Fdevices%2FjebrandoDevice%2Fmessages%2FdeviceBound&%24.cid&%24.uid",
			"thisIsDeviceID", Message{Ack: AckFull, To: "/devices/jebrandoDevice/messages/deviceBound",
				Properties: []AppProperty{{"propName", "PropValue"}, {"DeviceInfo", "smokeTest"}}}},
		{"Node SDK test (exp only)", "devices/foo/messages/devicebound/%24.exp=2017-01-06T23%3A37%3A00.669Z",
			"foo", Message{ExpiryTime: time.Date(2017, 1, 6, 23, 37, 0, 669000000, time.UTC)}},
		{"empty bag", "devices/d1/messages/devicebound/", "d1", Message{}},
		{"empty bag, no trailing slash", "devices/d1/messages/devicebound", "d1", Message{}},
		{"unknown system keys ignored", "devices/d1/messages/devicebound/%24.on=out1&%24.ifid=x&%24c2d.future=1&iothub-operation=x&a=1",
			"d1", Message{Properties: []AppProperty{{"a", "1"}}}},
	}
	for _, c := range cases {
		t.Run(c.source, func(t *testing.T) {
			dev, m, err := ParseDeviceBoundTopic(c.topic)
			if err != nil {
				t.Fatal(err)
			}
			if dev != c.dev {
				t.Errorf("device %q, want %q", dev, c.dev)
			}
			if !reflect.DeepEqual(*m, c.want) {
				t.Errorf("message\n got %+v\nwant %+v", *m, c.want)
			}
		})
	}
}

func TestDeviceBoundTopicRendering(t *testing.T) {
	exp := time.Date(2026, 11, 25, 21, 0, 0, 0, time.FixedZone("CET", 3600))
	m := &Message{
		MessageID: "cmd-1", CorrelationID: "corr:7", UserID: "svc", ExpiryTime: exp,
		ContentType: "application/json", ContentEncoding: "utf-8", Ack: AckFull, LockToken: "lt-abc",
		Properties: []AppProperty{{"led", "on"}, {"a/b", "x y+z"}, {"empty", ""}},
	}
	got := DeviceBoundTopic("pi-1", m)
	want := "devices/pi-1/messages/devicebound/%24.mid=cmd-1&%24.cid=corr%3A7&%24.uid=svc" +
		"&%24.to=%2Fdevices%2Fpi-1%2Fmessages%2FdeviceBound&%24.exp=2026-11-25T20%3A00%3A00.0000000Z" +
		"&%24.ct=application%2Fjson&%24.ce=utf-8&iothub-ack=full&%24c2d.lt=lt-abc&led=on&a%2Fb=x%20y%2Bz&empty="
	if got != want {
		t.Fatalf("DeviceBoundTopic\n got %s\nwant %s", got, want)
	}
	dev, back, err := ParseDeviceBoundTopic(got)
	if err != nil || dev != "pi-1" {
		t.Fatal(dev, err)
	}
	m.To = DeviceBoundTo("pi-1")
	m.ExpiryTime = exp.UTC()
	if !reflect.DeepEqual(back, m) {
		t.Errorf("round trip\n got %+v\nwant %+v", back, m)
	}
	// Nothing set: only $.to; Ack omitted when empty.
	if got := DeviceBoundTopic("d", &Message{}); got != "devices/d/messages/devicebound/%24.to=%2Fdevices%2Fd%2Fmessages%2FdeviceBound" {
		t.Errorf("minimal: %s", got)
	}
	// Ids with MQTT wildcards are escaped in topic levels and come back intact.
	top := DeviceBoundTopic("a+b#c%d", &Message{})
	if !strings.HasPrefix(top, "devices/a%2Bb%23c%25d/messages/devicebound/") {
		t.Errorf("escaped id: %s", top)
	}
	if dev, _, err := ParseDeviceBoundTopic(top); err != nil || dev != "a+b#c%d" {
		t.Errorf("escaped id back: %q %v", dev, err)
	}
	if f := DeviceBoundFilter("a+b"); f != "devices/a%2Bb/messages/devicebound/#" {
		t.Errorf("filter %s", f)
	}
}

func TestParseDeviceBoundTopicErrors(t *testing.T) {
	cases := []struct{ topic, mention string }{
		{"device/d/messages/devicebound/", "does not start"},
		{"devices/d/messages/events/", "devicebound"},
		{"devices/d/messages/deviceboundX", "devicebound"},
		{"devices//messages/devicebound/", "device id is empty"},
		{"devices/d/messages/devicebound/%24.exp=tomorrow", `$.exp: "tomorrow" is not an RFC 3339 time`},
		{"devices/d/messages/devicebound/iothub-ack=sometimes", "iothub-ack"},
		{"devices/d/messages/devicebound/a=%G1", "bad percent-escape"},
		{"devices/d/messages/devicebound/%24c2d.lt", "lock token is empty"},
		{"devices/d%2/messages/devicebound/", "bad percent-escape"},
	}
	for _, c := range cases {
		_, _, err := ParseDeviceBoundTopic(c.topic)
		if err == nil || !strings.Contains(err.Error(), c.mention) {
			t.Errorf("ParseDeviceBoundTopic(%q) = %v, want mention of %q", c.topic, err, c.mention)
		}
	}
}

func TestEventsTopic(t *testing.T) {
	bag := PropertyBag{{Name: "$.mid", Value: "m1"}, {Name: "temp", Value: "21.5"}, {Name: "flag", Null: true}}
	top := EventsTopic("d1", bag)
	if top != "devices/d1/messages/events/%24.mid=m1&temp=21.5&flag" {
		t.Fatal(top)
	}
	dev, back, err := ParseEventsTopic(top)
	if err != nil || dev != "d1" || !reflect.DeepEqual(back, bag) {
		t.Fatalf("%q %+v %v", dev, back, err)
	}
	// What the Python SDK publishes for a message without properties.
	if dev, back, err := ParseEventsTopic("devices/d1/messages/events/"); err != nil || dev != "d1" || len(back) != 0 {
		t.Fatalf("empty: %q %v %v", dev, back, err)
	}
	if _, _, err := ParseEventsTopic("devices/d1/messages/devicebound/"); !errors.Is(err, ErrTopic) {
		t.Fatalf("wrong kind: %v", err)
	}
}

func TestParseUsername(t *testing.T) {
	cases := []struct {
		in                string
		host, device, mod string
		params            url.Values
	}{
		{"myhub.azure-devices.net/dev1/?api-version=2021-04-12", "myhub.azure-devices.net", "dev1", "", url.Values{"api-version": {"2021-04-12"}}},
		// Node SDK: '/?api-version=...&DeviceClientType=' + encodeURIComponent(productInfo)
		{"myhub.azure-devices.net/dev1/?api-version=2021-04-12&DeviceClientType=azure-iot-device%2F1.18.1%20(node%20v18.17.0%3B%20Linux%3B%20x64)",
			"myhub.azure-devices.net", "dev1", "", url.Values{"api-version": {"2021-04-12"}, "DeviceClientType": {"azure-iot-device/1.18.1 (node v18.17.0; Linux; x64)"}}},
		// Old C SDK form, no '?'
		{"myhub.azure-devices.net/dev1/api-version=2016-11-14&DeviceClientType=iothubclient%2f1.1.23%20(native%3b%20Linux%3b%20x86_64)",
			"myhub.azure-devices.net", "dev1", "", url.Values{"api-version": {"2016-11-14"}, "DeviceClientType": {"iothubclient/1.1.23 (native; Linux; x86_64)"}}},
		{"myhub.azure-devices.net/dev1/mod-a/?api-version=2021-04-12&model-id=dtmi%3Acom%3Aexample%3AThermostat%3B1",
			"myhub.azure-devices.net", "dev1", "mod-a", url.Values{"api-version": {"2021-04-12"}, "model-id": {"dtmi:com:example:Thermostat;1"}}},
		{"hub/dev1/mod-a/api-version=2021-04-12", "hub", "dev1", "mod-a", url.Values{"api-version": {"2021-04-12"}}},
		{"hub:8883/dev1", "hub:8883", "dev1", "", url.Values{}},
		{"hub/dev1/", "hub", "dev1", "", url.Values{}},
		{"hub/what?now/?api-version=2021-04-12", "hub", "what?now", "", url.Values{"api-version": {"2021-04-12"}}},
		{"127.0.0.1/pi+1/?api-version=2021-04-12&c2d-ext=dispositions", "127.0.0.1", "pi+1", "",
			url.Values{"api-version": {"2021-04-12"}, "c2d-ext": {"dispositions"}}},
		// '+' is literal, a raw odd value is kept as sent
		{"hub/dev1/?DeviceClientType=a+b%zz", "hub", "dev1", "", url.Values{"DeviceClientType": {"a+b%zz"}}},
	}
	for _, c := range cases {
		u, err := ParseUsername(c.in)
		if err != nil {
			t.Errorf("ParseUsername(%q): %v", c.in, err)
			continue
		}
		if u.HostName != c.host || u.DeviceID != c.device || u.ModuleID != c.mod || !reflect.DeepEqual(u.Params, c.params) {
			t.Errorf("ParseUsername(%q) = %+v", c.in, u)
		}
	}
	u, _ := ParseUsername("h/d/?api-version=2021-04-12&c2d-ext=foo,dispositions")
	if !u.HasExtension(ExtensionDispositions) || u.HasExtension("foo2") || u.APIVersion() != APIVersion {
		t.Errorf("HasExtension/APIVersion on %+v", u)
	}
	for _, bad := range []string{"", "hub", "hub/", "/dev", "hub/dev/mod/extra/?a=b", "hub/d d/?api-version=1", "hub//mod/?x=1", "hub/dev/?=x", "hu b/dev/"} {
		if _, err := ParseUsername(bad); !errors.Is(err, ErrTopic) {
			t.Errorf("ParseUsername(%q) = %v, want error", bad, err)
		}
	}
}

func TestFormatUsername(t *testing.T) {
	got := FormatUsername("myhub.azure-devices.net", "dev1", "", url.Values{
		"c2d-ext": {"dispositions"}, "DeviceClientType": {"c2d-agent/1.0 (linux; arm)"},
	})
	want := "myhub.azure-devices.net/dev1/?api-version=2021-04-12&DeviceClientType=c2d-agent%2F1.0%20%28linux%3B%20arm%29&c2d-ext=dispositions"
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	u, err := ParseUsername(got)
	if err != nil || u.Params.Get("DeviceClientType") != "c2d-agent/1.0 (linux; arm)" {
		t.Fatal(u, err)
	}
	if got := FormatUsername("h", "d", "m", nil); got != "h/d/m/?api-version=2021-04-12" {
		t.Fatal(got)
	}
}

func TestClientID(t *testing.T) {
	if ClientID("d", "") != "d" || ClientID("d", "m") != "d/m" {
		t.Fatal("ClientID")
	}
	if d, m, err := ParseClientID("d/m"); err != nil || d != "d" || m != "m" {
		t.Fatal(d, m, err)
	}
	for _, bad := range []string{"", "d/", "/m", "d/m/x", "d d", strings.Repeat("x", 129)} {
		if _, _, err := ParseClientID(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseClientID(%q) = %v", bad, err)
		}
	}
}

// DeviceBoundTopicBound is never below the topic's real length, however the properties encode
// (plain, every byte escaped, null values, no $.to, an explicit expiry, a lock token), and an
// ordinary message is far below the limit, so its topic need not be built to check it.
func TestDeviceBoundTopicBound(t *testing.T) {
	esc := strings.Repeat("%&= ü", 50)
	exp := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	tiny := make([]AppProperty, 200)
	for i := range tiny {
		tiny[i] = AppProperty{Name: "=", Value: "%"}
	}
	cases := []struct {
		id string
		m  Message
	}{
		{"d", Message{}},
		{"dev-1", Message{MessageID: "m1", Ack: AckFull, Properties: []AppProperty{{Name: "output", Value: "led1"}}}},
		{"a%b+c#d/e", Message{MessageID: esc, CorrelationID: esc, UserID: esc, To: esc, ContentType: esc,
			ContentEncoding: esc, Ack: AckNegative, LockToken: esc, ExpiryTime: exp,
			Properties: []AppProperty{{Name: esc, Value: esc}, {Name: "n"}, {Name: "", Value: esc}}}},
		{strings.Repeat("%", 128), Message{Properties: []AppProperty{{Name: esc, Value: strings.Repeat("%", 30000)}}}},
		// The bound at its tightest: every system property present and every byte escaped, and
		// many one-byte properties ("%3D=%25&": exactly 3 × 2 + 2 bytes each).
		{"%", Message{MessageID: esc, CorrelationID: esc, UserID: esc, To: esc, ContentType: esc,
			ContentEncoding: esc, Ack: AckNegative, LockToken: esc, ExpiryTime: exp, Properties: tiny}},
		{"%", Message{MessageID: esc, ExpiryTime: exp, Properties: tiny}},
	}
	for i, c := range cases {
		got, bound := len(DeviceBoundTopic(c.id, &c.m)), DeviceBoundTopicBound(c.id, &c.m)
		if bound < got {
			t.Errorf("case %d: bound %d below the topic's %d bytes", i, bound, got)
		}
	}
	if b := DeviceBoundTopicBound("dev-1", &cases[1].m); b > 2000 {
		t.Errorf("an ordinary message's bound is %d bytes", b)
	}
}
