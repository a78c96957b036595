package server_test

import (
	"context"
	"log/slog"
	"slices"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// allowAll lets every client connect, publish and subscribe (the baseline broker).
type allowAll struct{ mqtt.HookBase }

func (allowAll) ID() string { return "allow-all" }
func (allowAll) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
}
func (allowAll) OnConnectAuthenticate(*mqtt.Client, packets.Packet) bool { return true }
func (allowAll) OnACLCheck(*mqtt.Client, string, bool) bool              { return true }

func pahoClient(b *testing.B, addr, id, user, pass string) paho.Client {
	b.Helper()
	c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetUsername(user).SetPassword(pass).
		SetProtocolVersion(4).SetAutoReconnect(false).SetCleanSession(true).SetOrderMatters(false))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		b.Fatalf("connect %s: %v", id, tok.Error())
	}
	b.Cleanup(func() { c.Disconnect(0) })
	return c
}

func subscribe(b *testing.B, c paho.Client, filter string, h paho.MessageHandler) {
	b.Helper()
	if tok := c.Subscribe(filter, 0, h); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		b.Fatal(tok.Error())
	}
}

// latencies reports p50 and p99 of the samples as metrics.
func latencies(b *testing.B, d []time.Duration) {
	if len(d) == 0 {
		return
	}
	slices.Sort(d)
	b.ReportMetric(float64(d[len(d)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(d[len(d)*99/100].Microseconds())/1000, "p99-ms")
}

// BenchmarkMethodRoundTrip: a direct method through the service API (HTTP → hub → MQTT → device
// answers → HTTP), one call at a time, the device a paho client answering at once. Baseline in the
// same run: a raw MQTT request/reply between two paho clients through a plain mochi broker (the
// library c2d-hub embeds) with no hooks — the floor any hub's request/reply sits on. Target ≤ 3×.
func BenchmarkMethodRoundTrip(b *testing.B) {
	b.Run("baseline-raw-mqtt-request-reply", func(b *testing.B) {
		srv := mqtt.New(&mqtt.Options{InlineClient: false, Logger: slog.New(slog.DiscardHandler)})
		if err := srv.AddHook(new(allowAll), nil); err != nil {
			b.Fatal(err)
		}
		l := listeners.NewTCP(listeners.Config{ID: "t", Address: "127.0.0.1:0"})
		if err := srv.AddListener(l); err != nil {
			b.Fatal(err)
		}
		if err := srv.Serve(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = srv.Close() })
		dev := pahoClient(b, l.Address(), "dev", "", "")
		subscribe(b, dev, "req/#", func(c paho.Client, m paho.Message) {
			go c.Publish("res/"+m.Topic()[4:], 0, false, []byte(`{"outcome":"done"}`))
		})
		svc := pahoClient(b, l.Address(), "svc", "", "")
		answers := make(chan struct{}, 1)
		subscribe(b, svc, "res/#", func(paho.Client, paho.Message) { answers <- struct{}{} })
		var d []time.Duration
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			start := time.Now()
			svc.Publish("req/x", 0, false, []byte("null"))
			select {
			case <-answers:
			case <-time.After(10 * time.Second):
				b.Fatal("no reply")
			}
			d = append(d, time.Since(start))
		}
		latencies(b, d)
	})
	b.Run("c2d-hub-direct-method", func(b *testing.B) {
		s, c := startHub(b)
		ctx := context.Background()
		dv, err := c.CreateDevice(ctx, "bench-m", "", "")
		if err != nil {
			b.Fatal(err)
		}
		tok, err := iothub.DeviceConnectionString{HostName: "bench.local", DeviceID: dv.DeviceID, SharedAccessKey: dv.Authentication.SymmetricKey.PrimaryKey}.Token(time.Now(), time.Hour)
		if err != nil {
			b.Fatal(err)
		}
		dev := pahoClient(b, s.Endpoints().MQTT, dv.DeviceID, iothub.FormatUsername("bench.local", dv.DeviceID, "", nil), tok)
		subscribe(b, dev, iothub.MethodsFilter, func(cl paho.Client, m paho.Message) {
			_, rid, err := iothub.ParseMethodRequestTopic(m.Topic())
			if err == nil {
				go cl.Publish(iothub.MethodResponseTopic(200, rid), 0, false, []byte(`{"outcome":"done"}`))
			}
		})
		var d []time.Duration
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			start := time.Now()
			res, err := c.InvokeMethod(ctx, dv.DeviceID, iothub.MethodRequest{MethodName: "state"})
			if err != nil || res.Status != 200 {
				b.Fatalf("invoke: %v %+v", err, res)
			}
			d = append(d, time.Since(start))
		}
		latencies(b, d)
	})
}
