package hub

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// Durable sends/s. The baseline, BenchmarkFsync, is one fsync'd append to a file in the same
// directory kind (t.TempDir) per op: what a durable send would cost without group commit. Compare
// ns/op of BenchmarkSend (one sender: one commit, one fsync per send) and BenchmarkSendParallel
// (concurrent senders share commits) with it.

const benchDevices = 64

func benchHub(b *testing.B) *Hub {
	b.Helper()
	cfg := Config{HostName: "hub.test", MaxQueueDepth: 100000}
	h, err := Open(context.Background(), b.TempDir(), cfg, Events{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { h.Close() })
	for i := range benchDevices {
		if _, _, err := h.PutDevice(context.Background(), iothub.Device{DeviceID: fmt.Sprint("dev", i)}, ""); err != nil {
			b.Fatal(err)
		}
	}
	return h
}

func benchReq() iothub.SendRequest {
	return iothub.SendRequest{
		Ack:        iothub.AckFull,
		Properties: []iothub.AppProperty{{Name: "output", Value: "led1"}, {Name: "state", Value: "on"}},
		Body:       []byte(`{"blink":3}`),
	}
}

func BenchmarkFsync(b *testing.B) {
	f, err := os.OpenFile(filepath.Join(b.TempDir(), "log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	rec := make([]byte, 200)
	for b.Loop() {
		if _, err := f.Write(rec); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "fsyncs/s")
}

func BenchmarkSend(b *testing.B) {
	h := benchHub(b)
	req := benchReq()
	i := 0
	for b.Loop() {
		if _, err := h.Send(context.Background(), fmt.Sprint("dev", i%benchDevices), req); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sends/s")
}

func BenchmarkSendParallel(b *testing.B) {
	h := benchHub(b)
	req := benchReq()
	var n atomic.Int64
	b.SetParallelism(16) // 16 × GOMAXPROCS concurrent senders, as an HTTP API under load has
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			if _, err := h.Send(context.Background(), fmt.Sprint("dev", i%benchDevices), req); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sends/s")
	b.ReportMetric(float64(b.N)/float64(h.st.(*sqlStore).commits.Load()), "sends/commit")
}

// BenchmarkSendDeliverComplete measures one message's way through the core: Send (durable),
// delivery to an attached connection, Complete (durable, with its feedback record). It reports
// p50/p99 latency from Send to the committed completion, 16 messages in flight.
func BenchmarkSendDeliverComplete(b *testing.B) {
	h := benchHub(b)
	c := newConn("dev0")
	h.Attach(c)
	req := benchReq()
	var lat []time.Duration
	done := make(chan time.Duration, 1024)
	go func() {
		for m := range c.ch {
			if err := h.Settle(context.Background(), "dev0", m.LockToken, iothub.DispositionComplete, ""); err != nil {
				b.Error(err)
			}
			t, _ := time.Parse(time.RFC3339Nano, m.CorrelationID)
			done <- time.Since(t)
		}
	}()
	const window = 16
	inflight := 0
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if inflight == window {
			lat = append(lat, <-done)
			inflight--
		}
		r := req
		r.CorrelationID = time.Now().Format(time.RFC3339Nano)
		if _, err := h.Send(context.Background(), "dev0", r); err != nil {
			b.Fatal(err)
		}
		inflight++
	}
	for ; inflight > 0; inflight-- {
		lat = append(lat, <-done)
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}
