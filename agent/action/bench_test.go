package action

import (
	"testing"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// BenchmarkDecode compares the decoder with parsing the delivery topic it comes from (the baseline
// every message pays anyway): deciding what to do must cost no more than reading the message.
func BenchmarkDecode(b *testing.B) {
	cat := testCatalog()
	m := msg("target", "act", "action", "blink", "count", "5", "interval", "100ms")
	topic := iothub.DeviceBoundTopic("pi-1", m)
	b.Run("baseline=parse-topic", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := iothub.ParseDeviceBoundTopic(topic); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := cat.Decode(m, now); err != nil {
				b.Fatal(err)
			}
		}
	})
}
