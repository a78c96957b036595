package bench

import (
	"context"
	"os"
	"testing"
	"time"
)

func TestSummarise(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- { // unsorted on purpose
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	d := Summarise(ds)
	if d.N != 100 || d.P50 != 50 || d.P95 != 95 || d.P99 != 99 || d.Max != 100 || d.Mean != 50.5 {
		t.Fatalf("Summarise = %+v; want n 100, p50 50, p95 95, p99 99, max 100, mean 50.5", d)
	}
	if z := Summarise(nil); z.N != 0 {
		t.Fatalf("Summarise(nil) = %+v", z)
	}
}

// TestLiteClientThroughRawBroker runs the lightweight client against the plain mochi baseline:
// QoS 1 both ways, PUBACK waits, and a clean disconnect.
func TestLiteClientThroughRawBroker(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	addrc, errc := make(chan string, 1), make(chan error, 1)
	go func() { errc <- ServeRawBroker(ctx, "127.0.0.1:0", func(a string) { addrc <- a }) }()
	var addr string
	select {
	case addr = <-addrc:
	case err := <-errc:
		t.Fatal(err)
	case <-time.After(10 * time.Second):
		t.Fatal("raw broker did not start")
	}
	defer func() {
		cancel()
		if err := <-errc; err != nil {
			t.Error(err)
		}
	}()
	got := make(chan string, 10)
	sub, err := DialLite(addr, LiteOptions{ClientID: "sub", CleanSession: true, OnMessage: func(topic string, p []byte) { got <- topic + " " + string(p) }})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if err := sub.Subscribe("t/#", 1, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	pub, err := DialLite(addr, LiteOptions{ClientID: "pub", CleanSession: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"one", "two"} {
		if err := pub.Publish("t/x", []byte(m), 1, 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []string{"t/x one", "t/x two"} {
		select {
		case g := <-got:
			if g != want {
				t.Fatalf("received %q, want %q", g, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("did not receive %q", want)
		}
	}
	if err := pub.Close(); err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish("t/x", []byte("late"), 1, time.Second); err == nil {
		t.Fatal("publish on a closed client succeeded")
	}
}

func TestProcStats(t *testing.T) {
	rss, hwm, err := RSS(os.Getpid())
	if err != nil || rss <= 0 || hwm < rss {
		t.Fatalf("RSS = %d, %d, %v", rss, hwm, err)
	}
	if _, err := CPUTime(os.Getpid()); err != nil {
		t.Fatal(err)
	}
	if _, _, err := RSS(-1); err == nil {
		t.Fatal("RSS of pid -1 succeeded")
	}
}
