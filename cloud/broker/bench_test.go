package broker_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// BenchmarkSendDeliverComplete measures one message's full trip through the real hub core and
// broker over loopback: durable Send → QoS 1 PUBLISH to a paho client → PUBACK → Completed. It
// reports the latency percentiles of that trip (sequential, one message in flight). The baseline,
// measured in the same run, is a bare MQTT QoS 1 round trip (event PUBLISH → PUBACK) on the same
// connection: the part of the trip the hub core does not add.
func BenchmarkSendDeliverComplete(b *testing.B) {
	e := newEnv(b, envOpt{})
	d := e.device("bench")
	cl := e.connect(d, clientOpts{})
	cl.subscribeC2D("bench")
	b.Run("baseline-mqtt-qos1-roundtrip", func(b *testing.B) {
		topic := iothub.EventsTopic("bench", nil)
		lat := make([]time.Duration, 0, b.N)
		for range b.N {
			start := time.Now()
			if err := cl.publish(topic, 1, []byte("bench")); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(start))
		}
		report(b, lat)
	})
	b.Run("send-deliver-complete", func(b *testing.B) { benchTrip(b, e, cl) })
}

func benchTrip(b *testing.B, e *env, cl *client) {
	ctx := context.Background()
	lat := make([]time.Duration, 0, b.N)
	for range b.N {
		start := time.Now()
		res, err := e.hub.Send(ctx, "bench", iothub.SendRequest{Body: []byte("bench"), Properties: []iothub.AppProperty{{Name: "output", Value: "led1"}}})
		if err != nil {
			b.Fatal(err)
		}
		cl.next()
		wctx, cancel := context.WithTimeout(ctx, wait)
		st, err := e.hub.WaitSettled(wctx, "bench", res.MessageID)
		cancel()
		if err != nil || st.Outcome != iothub.StatusSuccess {
			b.Fatalf("%+v %v", st, err)
		}
		lat = append(lat, time.Since(start))
	}
	report(b, lat)
}

func report(b *testing.B, lat []time.Duration) {
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}
