package broker

import (
	"log/slog"
	"testing"

	mqtt "github.com/c2d-project/c2d/cloud/broker/internal/mochi"
	"github.com/c2d-project/c2d/cloud/iothub"
)

// aclCase is one topic and whether a connection may use it. The expectations are written out by
// hand from docs/protocol.md §3 (Azure's topics, the extension's $c2d topics), never derived from
// the functions under test.
type aclCase struct {
	topic string
	want  bool
	why   string
}

func checkSubscribe(t *testing.T, c *conn, cases []aclCase) {
	t.Helper()
	for _, tc := range cases {
		if got := c.maySubscribe(tc.topic); got != tc.want {
			t.Errorf("device %q module %q subscribing to %q: allowed=%v, want %v (%s)", c.deviceID, c.moduleID, tc.topic, got, tc.want, tc.why)
		}
	}
}

func checkPublish(t *testing.T, c *conn, cases []aclCase) {
	t.Helper()
	for _, tc := range cases {
		if got := c.mayPublish(tc.topic); got != tc.want {
			t.Errorf("device %q module %q (extension %v) publishing to %q: allowed=%v, want %v (%s)", c.deviceID, c.moduleID, c.ext, tc.topic, got, tc.want, tc.why)
		}
	}
}

// Azure allows '+', '#' and '%' in device ids; in a topic level they are wildcards or escapes, so
// such a device must use the percent-encoded level, and its raw id must never act as a wildcard.
func TestACLDeviceIDWithWildcardNeverGetsWildcardFilter(t *testing.T) {
	checkSubscribe(t, &conn{deviceID: "+", ext: true}, []aclCase{
		{"devices/+/messages/devicebound/#", false, "the raw id is a wildcard matching every device"},
		{"devices/%2B/messages/devicebound/#", true, "its own id, encoded"},
		{"$c2d/devices/+/messages/devicebound/#", false, "the raw id is a wildcard"},
		{"$c2d/devices/%2B/messages/devicebound/#", true, "its own extension filter, encoded"},
	})
	checkSubscribe(t, &conn{deviceID: "#", ext: true}, []aclCase{
		{"devices/#/messages/devicebound/#", false, "the raw id is a multi-level wildcard"},
		{"devices/%23/messages/devicebound/#", true, "its own id, encoded"},
		{"$c2d/devices/#/messages/devicebound/#", false, "the raw id is a multi-level wildcard"},
	})
	checkSubscribe(t, &conn{deviceID: "a+b"}, []aclCase{
		{"devices/a+b/messages/devicebound/#", false, "'+' inside a level is not valid MQTT and never the device's topic"},
		{"devices/a%2Bb/messages/devicebound/#", true, "its own id, encoded"},
	})
	checkPublish(t, &conn{deviceID: "+", ext: true}, []aclCase{
		{"devices/+/messages/events", false, "a wildcard is not a topic name"},
		{"devices/%2B/messages/events", true, "its own events, encoded"},
		{"$c2d/devices/%2B/messages/devicebound/lt/complete", true, "its own disposition, encoded"},
		{"$c2d/devices/+/messages/devicebound/lt/complete", false, "a wildcard is not a topic name"},
	})
}

// A level is decoded once: device "a%41" owns `devices/a%2541/...`; the raw level `a%41` decodes
// to "aA", another device, whose events the hub would record.
func TestACLRawPercentLevelIsNotAnotherDevicesID(t *testing.T) {
	checkPublish(t, &conn{deviceID: "a%41", ext: true}, []aclCase{
		{"devices/a%41/messages/events", false, "decodes to device aA"},
		{"devices/a%2541/messages/events", true, "its own id, encoded"},
		{"$c2d/devices/a%41/messages/devicebound/lt/complete", false, "decodes to device aA"},
		{"$c2d/devices/a%2541/messages/devicebound/lt/complete", true, "its own id, encoded"},
	})
	checkSubscribe(t, &conn{deviceID: "a%41"}, []aclCase{
		{"devices/a%41/messages/devicebound/#", false, "decodes to device aA"},
		{"devices/a%2541/messages/devicebound/#", true, "its own id, encoded"},
	})
	checkPublish(t, &conn{deviceID: "aA"}, []aclCase{
		{"devices/a%41/messages/events", true, "its own id, needlessly encoded (the Python SDK encodes)"},
		{"devices/a%4/messages/events", false, "a broken escape names no device"},
		{"devices/a%4G/messages/events", false, "a broken escape names no device"},
	})
	checkSubscribe(t, &conn{deviceID: "aA"}, []aclCase{
		{"devices/a%41/messages/devicebound/#", true, "its own id, needlessly encoded"},
		{"devices/a%4G/messages/devicebound/#", false, "a broken escape names no device"},
	})
}

// A module publishes only its own module events topic: not as its device, another module, or
// another device's module.
func TestACLModuleTopics(t *testing.T) {
	m := &conn{deviceID: "gw", moduleID: "sensor", ext: true}
	checkPublish(t, m, []aclCase{
		{"devices/gw/modules/sensor/messages/events", true, "its own events"},
		{"devices/gw/modules/sensor/messages/events/", true, "its own events, empty bag"},
		{"devices/gw/modules/sensor/messages/events/a=b", true, "its own events with a bag"},
		{"devices/gw/modules/sens%6Fr/messages/events", true, "its own module id, encoded"},
		{"devices/gw/modules/other/messages/events", false, "another module of the same device"},
		{"devices/gw2/modules/sensor/messages/events", false, "the same module name on another device"},
		{"devices/gw/messages/events", false, "a module is not its device"},
		{"devices/gw/modules/sensor/messages/eventsX", false, "not the events topic"},
		{"devices/gw/modules/sensor/messages/eventsX/a=b", false, "not the events topic"},
		{"devices/gw/module/sensor/messages/events", false, "not the modules level"},
		{"devices/gw/modules/sensor/message/events", false, "not the messages level"},
		{"devices/gw/modules/sensor/messages", false, "no events level"},
		{"gw/modules/sensor/messages/events", false, "no devices/ prefix"},
		{"$c2d/devices/gw/messages/devicebound/lt/complete", false, "modules get no cloud-to-device messages to settle"},
	})
	checkSubscribe(t, m, []aclCase{
		{"$iothub/methods/POST/#", true, "the SDKs' no-op filters are granted to modules too"},
		{"$iothub/twin/res/#", true, "no-op SDK filter"},
		{"devices/gw/messages/devicebound/#", false, "modules get no cloud-to-device messages (as on Azure)"},
		{"$c2d/devices/gw/messages/devicebound/#", false, "modules get no cloud-to-device messages"},
	})
	// The device itself may not publish as one of its modules.
	checkPublish(t, &conn{deviceID: "gw"}, []aclCase{
		{"devices/gw/modules/sensor/messages/events", false, "a device is not its module"},
	})
}

// Events topics are exactly `messages/events` or below it; anything merely starting with the same
// letters is someone else's topic space.
func TestACLEventsTopicExactLevel(t *testing.T) {
	checkPublish(t, &conn{deviceID: "dev-a"}, []aclCase{
		{"devices/dev-a/messages/events", true, "events without a bag"},
		{"devices/dev-a/messages/events/", true, "events with an empty bag"},
		{"devices/dev-a/messages/events/a=b&c=d", true, "events with a bag"},
		{"devices/dev-a/messages/eventsX", false, "not the events topic"},
		{"devices/dev-a/messages/eventsX/a=b", false, "not the events topic"},
		{"devices/dev-a/messages/devicebound", false, "device-bound is the hub's to publish"},
		{"devices/dev-a", false, "no topic under the id"},
		{"devices/dev-b/messages/events", false, "another device's events"},
		{"devices//messages/events", false, "no device id"},
	})
}

// The SDKs' method responses and twin requests are accepted and dropped; nothing else under
// $iothub/ is, and method requests are the hub's to publish.
func TestACLMethodsResponseAndTwinTopics(t *testing.T) {
	checkPublish(t, &conn{deviceID: "dev-a"}, []aclCase{
		{"$iothub/methods/res/200/?$rid=1", true, "a direct-method response of the SDKs"},
		{"$iothub/twin/GET/?$rid=1", true, "a twin request of the SDKs"},
		{"$iothub/twin/PATCH/properties/reported/?$rid=2", true, "a twin patch of the SDKs"},
		{"$iothub/methods/POST/reboot/?$rid=1", false, "method requests go to devices, not from them"},
		{"$iothub/methods/res", false, "not under the response prefix"},
		{"$iothub/other", false, "not a topic the SDKs use"},
		{"$SYS/broker/uptime", false, "not a device topic"},
	})
}

// The extension's disposition topics need the extension, the device's own id and the
// device-bound path.
func TestACLDispositionTopics(t *testing.T) {
	ext := &conn{deviceID: "dev-a", ext: true}
	checkPublish(t, ext, []aclCase{
		{"$c2d/devices/dev-a/messages/devicebound/lt/complete", true, "its own disposition"},
		{"$c2d/devices/dev-a/messages/devicebound/lt/bogus", true, "a malformed remainder is dropped by the delivery hook, not refused"},
		{"$c2d/devices/dev-b/messages/devicebound/lt/complete", false, "another device's message"},
		{"$c2d/devices/dev-a/messages/events/lt/complete", false, "not under devicebound"},
		{"$c2d/devices/dev-a", false, "no path under the id"},
	})
	checkPublish(t, &conn{deviceID: "dev-a"}, []aclCase{
		{"$c2d/devices/dev-a/messages/devicebound/lt/complete", false, "the connection did not opt into the extension"},
	})
	checkSubscribe(t, ext, []aclCase{
		{"$c2d/devices/dev-a/messages/devicebound/#", true, "the extension's filter"},
		{"$c2d/devices/dev-a/messages/devicebound/+", false, "not the documented filter"},
		{"$c2d/devices/dev-a/messages/#", false, "not the documented filter"},
		{"$c2d/devices/dev-a", false, "no path under the id"},
		{"$c2d/devices/dev-b/messages/devicebound/#", false, "another device"},
		{"devices/dev-a/messages/devicebound/+", false, "not the documented filter"},
		{"devices/dev-a/messages/devicebound", false, "not the documented filter"},
		{"devices/dev-a", false, "no path under the id"},
	})
}

// A client the broker holds no session record for (mochi asks before the session is established,
// and for the inline client) may neither subscribe nor publish.
func TestACLClientWithoutConnectionRecordIsRefused(t *testing.T) {
	b := &Broker{conns: map[*mqtt.Client]*conn{}, log: slog.New(slog.DiscardHandler)}
	known := &mqtt.Client{ID: "dev-a"}
	b.conns[known] = &conn{deviceID: "dev-a", cl: known}
	h := &authHook{b: b}
	stranger := &mqtt.Client{ID: "dev-a"} // same client id, but no session of its own
	for _, tc := range []struct {
		topic string
		write bool
	}{
		{iothub.DeviceBoundFilter("dev-a"), false},
		{"$iothub/methods/POST/#", false},
		{iothub.EventsTopic("dev-a", nil), true},
		{"$iothub/twin/GET/?$rid=1", true},
	} {
		if h.OnACLCheck(stranger, tc.topic, tc.write) {
			t.Errorf("client without a session: %q (write %v) allowed", tc.topic, tc.write)
		}
		if !h.OnACLCheck(known, tc.topic, tc.write) {
			t.Errorf("the device's own session: %q (write %v) refused", tc.topic, tc.write)
		}
	}
	// mochi asks with write=false and a concrete topic before routing a publish to a client:
	// nothing is ever routed to devices.
	if h.OnACLCheck(known, iothub.EventsTopic("dev-a", nil), false) {
		t.Error("routing a device's own events topic to it was allowed")
	}
}
