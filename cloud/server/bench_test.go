package server_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/c2d-project/c2d/cloud/apiclient"
	"github.com/c2d-project/c2d/cloud/iothub"
	"github.com/c2d-project/c2d/cloud/server"
)

// startHub runs a whole hub in-process (store, broker, HTTP API) on loopback ports.
func startHub(b *testing.B) (*server.Server, *apiclient.Client) {
	b.Helper()
	cfg := server.Default()
	cfg.DataDir = b.TempDir()
	cfg.HostName = "bench.local"
	cfg.Listen = server.Listen{MQTT: "127.0.0.1:0", HTTP: "127.0.0.1:0", MQTTS: server.Off, HTTPS: server.Off, WS: server.Off, WSS: server.Off}
	cfg.Queue.MaxQueueDepth = 100000
	s, err := server.Start(context.Background(), cfg, slog.New(slog.DiscardHandler), io.Discard)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
	})
	p, _ := s.Hub().Policy("iothubowner")
	cs := iothub.ServiceConnectionString{HostName: cfg.HostName, SharedAccessKeyName: p.Name, SharedAccessKey: p.PrimaryKey}
	c, err := apiclient.New(cs, apiclient.Options{Endpoint: "http://" + s.Endpoints().HTTP})
	if err != nil {
		b.Fatal(err)
	}
	return s, c
}

// BenchmarkDurableSend: sends/s through the HTTP API, each answered only once committed (fsync),
// from 8 concurrent senders over 16 devices. Baseline in the same run: /healthz round trips (HTTP
// and a store read, no write).
func BenchmarkDurableSend(b *testing.B) {
	s, c := startHub(b)
	ctx := context.Background()
	const devices = 16
	for i := range devices {
		if _, err := c.CreateDevice(ctx, fmt.Sprintf("bench-%d", i), "", ""); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("baseline-healthz", func(b *testing.B) {
		b.SetParallelism(8)
		start := time.Now()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				resp, err := http.Get("http://" + s.Endpoints().HTTP + "/healthz")
				if err != nil {
					b.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
	})
	b.Run("send", func(b *testing.B) {
		var n atomic.Int64
		body := []byte(`{"action":"led","state":"on"}`)
		b.SetParallelism(8)
		start := time.Now()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				i := n.Add(1)
				if _, err := c.Send(ctx, fmt.Sprintf("bench-%d", i%devices), iothub.SendRequest{Ack: iothub.AckFull, Body: body,
					Properties: []iothub.AppProperty{{Name: "led", Value: "on"}}}); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "sends/s")
		b.StopTimer()
		for i := range devices {
			if _, err := c.Purge(ctx, fmt.Sprintf("bench-%d", i)); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkSendToComplete: one message at a time, send → deliver over MQTT to a real paho device
// (Azure style: its PUBACK completes) → settled as the service sees it (status long-poll).
// Reports p50/p99 of send→deliver and send→complete.
func BenchmarkSendToComplete(b *testing.B) {
	s, c := startHub(b)
	ctx := context.Background()
	dev, err := c.CreateDevice(ctx, "pi", "", "")
	if err != nil {
		b.Fatal(err)
	}
	cs := iothub.DeviceConnectionString{HostName: "bench.local", DeviceID: "pi", SharedAccessKey: dev.Authentication.SymmetricKey.PrimaryKey}
	tok, err := cs.Token(time.Now(), time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	got := make(chan time.Time, 16)
	o := paho.NewClientOptions().AddBroker("tcp://" + s.Endpoints().MQTT).SetClientID("pi").
		SetUsername(iothub.FormatUsername("bench.local", "pi", "", nil)).SetPassword(tok).
		SetCleanSession(false).SetAutoReconnect(false).
		SetDefaultPublishHandler(func(_ paho.Client, _ paho.Message) {
			select { // never block paho's router
			case got <- time.Now():
			default:
			}
		})
	mc := paho.NewClient(o)
	if t := mc.Connect(); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		b.Fatal("connect:", t.Error())
	}
	defer mc.Disconnect(0)
	if t := mc.Subscribe(iothub.DeviceBoundFilter("pi"), 1, nil); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		b.Fatal("subscribe:", t.Error())
	}
	deliver := make([]time.Duration, 0, b.N)
	complete := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		res, err := c.Send(ctx, "pi", iothub.SendRequest{Body: []byte("x")})
		if err != nil {
			b.Fatal(err)
		}
		select {
		case t1 := <-got:
			deliver = append(deliver, t1.Sub(t0))
		case <-time.After(10 * time.Second):
			b.Fatal("no delivery within 10s")
		}
		st, err := c.MessageStatus(ctx, "pi", res.MessageID, 10*time.Second)
		if err != nil || st.Outcome != iothub.StatusSuccess {
			b.Fatalf("status %+v, %v", st, err)
		}
		complete = append(complete, time.Since(t0))
	}
	b.StopTimer()
	pct := func(d []time.Duration, p float64) float64 {
		slices.Sort(d)
		return float64(d[int(float64(len(d)-1)*p)].Microseconds()) / 1000
	}
	b.ReportMetric(pct(deliver, 0.50), "deliver-p50-ms")
	b.ReportMetric(pct(deliver, 0.99), "deliver-p99-ms")
	b.ReportMetric(pct(complete, 0.50), "complete-p50-ms")
	b.ReportMetric(pct(complete, 0.99), "complete-p99-ms")
}
