package broker

import (
	"strings"
	"testing"

	mqtt "github.com/c2d-project/c2d/cloud/broker/internal/mochi"
	"github.com/c2d-project/c2d/cloud/broker/internal/mochi/packets"
	"github.com/c2d-project/c2d/cloud/iothub"
)

// FuzzACL checks device isolation on arbitrary topic names and filters: whatever device "dev-a"
// may subscribe to matches no topic of another device, and whatever it may publish to is not
// allowed to, or parsed as, another device.
func FuzzACL(f *testing.F) {
	for _, s := range []string{
		"devices/dev-a/messages/devicebound/#",
		"devices/dev%2Da/messages/devicebound/#",
		"devices/+/messages/devicebound/#",
		"devices/dev-a/messages/events/a=b",
		"devices/dev-a/messages/events",
		"$c2d/devices/dev-a/messages/devicebound/lt1/complete",
		"$c2d/devices/dev-a/messages/devicebound/#",
		"$iothub/methods/POST/#",
		"$iothub/twin/GET/?$rid=1",
		"#",
	} {
		f.Add(s)
	}
	a := &conn{deviceID: "dev-a", ext: true}
	others := []string{"dev-b", "DEV-A", "dev-a%", "dev-a+", "dev-", "dev-a.", "dev-aa"}
	f.Fuzz(func(t *testing.T, topic string) {
		if a.maySubscribe(topic) {
			noop := false
			for _, n := range noopFilters {
				noop = noop || topic == n
			}
			if !noop {
				idx := mqtt.NewTopicsIndex()
				idx.Subscribe("a", packets.Subscription{Filter: topic})
				for _, o := range others {
					for _, victim := range []string{
						iothub.DeviceBoundTopic(o, &iothub.Message{MessageID: "m", LockToken: "lt"}),
						iothub.DispositionTopic(o, "lt", iothub.DispositionComplete),
						iothub.EventsTopic(o, nil),
					} {
						if n := len(idx.Subscribers(victim).Subscriptions); n > 0 {
							t.Fatalf("dev-a may subscribe to %q, which matches %q of %q", topic, victim, o)
						}
					}
					if (&conn{deviceID: o, ext: true}).maySubscribe(topic) {
						t.Fatalf("%q allowed for both dev-a and %q", topic, o)
					}
				}
			}
		}
		if a.mayPublish(topic) && !strings.HasPrefix(topic, "$iothub/") { // $iothub/: dropped, no device in it
			for _, o := range others {
				if (&conn{deviceID: o, ext: true}).mayPublish(topic) {
					t.Fatalf("publish to %q allowed for both dev-a and %q", topic, o)
				}
			}
			if dev, _, err := iothub.ParseEventsTopic(topic); err == nil && dev != "dev-a" {
				t.Fatalf("dev-a may publish %q, an event of %q", topic, dev)
			}
			if dev, _, _, err := iothub.ParseDispositionTopic(topic); err == nil && dev != "dev-a" {
				t.Fatalf("dev-a may publish %q, a disposition of %q", topic, dev)
			}
			if (&conn{deviceID: "dev-a"}).mayPublish(topic) && len(topic) > 0 && topic[0] == '$' {
				t.Fatalf("a connection without the extension may publish %q", topic)
			}
		}
	})
}
