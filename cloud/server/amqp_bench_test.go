package server_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	goamqp "github.com/Azure/go-amqp"

	"github.com/c2d-project/c2d/cloud/apiclient"
	"github.com/c2d-project/c2d/cloud/iothub"
	"github.com/c2d-project/c2d/cloud/server"
	"github.com/c2d-project/c2d/internal/bench"
	"github.com/c2d-project/c2d/internal/testproc"
)

// startAMQPHub runs a whole hub in-process with the HTTP API and plain AMQP on loopback.
func startAMQPHub(b *testing.B) (*server.Server, *apiclient.Client, iothub.ServiceConnectionString) {
	b.Helper()
	cfg := server.Default()
	cfg.DataDir = b.TempDir()
	cfg.HostName = "bench.local"
	cfg.Listen = server.Listen{HTTP: "127.0.0.1:0", AMQP: "127.0.0.1:0"}
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
	p, _ := s.Hub().Policy("service")
	cs := iothub.ServiceConnectionString{HostName: cfg.HostName, SharedAccessKeyName: p.Name, SharedAccessKey: p.PrimaryKey}
	c, err := apiclient.New(cs, apiclient.Options{Endpoint: "http://" + s.Endpoints().HTTP})
	if err != nil {
		b.Fatal(err)
	}
	return s, c, cs
}

// amqpSender opens a connection, puts the service token on $cbs and attaches /messages/devicebound.
func amqpSender(b testing.TB, addr string, cs iothub.ServiceConnectionString) (*goamqp.Conn, *goamqp.Sender) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, sess := amqpSession(b, addr, cs)
	snd, err := sess.NewSender(ctx, "/messages/devicebound", nil)
	if err != nil {
		b.Fatal(err)
	}
	return conn, snd
}

func amqpSession(b testing.TB, addr string, cs iothub.ServiceConnectionString) (*goamqp.Conn, *goamqp.Session) {
	b.Helper()
	tok, err := cs.Token(time.Now(), time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	return amqpSessionToken(b, addr, cs.HostName, tok)
}

// amqpSessionToken opens a connection and a session and puts tok on $cbs for audience.
func amqpSessionToken(b testing.TB, addr, audience, tok string) (*goamqp.Conn, *goamqp.Session) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := goamqp.Dial(ctx, "amqp://"+addr, nil)
	if err != nil {
		b.Fatal(err)
	}
	sess, err := conn.NewSession(ctx, nil)
	if err != nil {
		b.Fatal(err)
	}
	if err := bench.PutCBSToken(ctx, sess, audience, tok); err != nil {
		b.Fatal(err)
	}
	return conn, sess
}

// BenchmarkSendAMQPvsHTTP: durable sends/s (each acknowledged only once committed) through one
// AMQP link, pipelined (64 unsettled sends in flight), against the HTTP API from 64 concurrent
// requests in the same run (the baseline). 64 devices, no device connected.
func BenchmarkSendAMQPvsHTTP(b *testing.B) {
	s, c, cs := startAMQPHub(b)
	ctx := context.Background()
	const devices, inflight = 64, 64
	for i := range devices {
		if _, _, err := s.Hub().PutDevice(ctx, iothub.Device{DeviceID: fmt.Sprintf("bench-%d", i)}, ""); err != nil {
			b.Fatal(err)
		}
	}
	run := func(b *testing.B, send func(i int) error) {
		b.ReportAllocs()
		var wg sync.WaitGroup
		next := make(chan int)
		errs := make(chan error, inflight)
		for range inflight {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range next {
					if err := send(i); err != nil {
						select {
						case errs <- err:
						default:
						}
					}
				}
			}()
		}
		start := time.Now()
		for i := 0; i < b.N; i++ {
			next <- i
		}
		close(next)
		wg.Wait()
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "sends/s")
		select {
		case err := <-errs:
			b.Fatal(err)
		default:
		}
	}
	b.Run("baseline-http-api", func(b *testing.B) {
		run(b, func(i int) error {
			_, err := c.Send(ctx, fmt.Sprintf("bench-%d", i%devices), iothub.SendRequest{Body: []byte("led on")})
			return err
		})
	})
	b.Run("amqp-one-link", func(b *testing.B) {
		conn, snd := amqpSender(b, s.Endpoints().AMQP, cs)
		defer conn.Close()
		run(b, func(i int) error {
			to := fmt.Sprintf("/devices/bench-%d/messages/devicebound", i%devices)
			return snd.Send(ctx, &goamqp.Message{Properties: &goamqp.MessageProperties{To: &to}, Data: [][]byte{[]byte("led on")}}, nil)
		})
	})
}

// BenchmarkIdleAMQPConnectionHub: what one idle, authorized AMQP connection costs the hub alone.
// c2d-hub runs in its own process; n go-amqp clients in this one each hold a connection, a session,
// the $cbs links and one /messages/devicebound link. The hub's RSS (/proc) and heap in use (its
// /metrics) are read before and after; then, in the same process and run, n bare TCP connections
// to its AMQP port that have sent nothing (the baseline: the kernel socket, the accepted conn's
// goroutine and read buffer). The bare ones are measured within the hub's 30 s handshake timeout.
func BenchmarkIdleAMQPConnectionHub(b *testing.B) {
	const n = 500
	dir := b.TempDir()
	if err := testproc.Build(dir, nil, "github.com/c2d-project/c2d/cloud/cmd/c2d-hub"); err != nil {
		b.Fatal(err)
	}
	for i := 0; i < b.N; i++ {
		h := testproc.StartHub(b, filepath.Join(dir, "c2d-hub"), testproc.HubOptions{Data: filepath.Join(b.TempDir(), "data"), Args: []string{
			"--hostname", "bench.local", "--log-level", "warn", "--mqtt", "off", "--mqtts", "off",
			"--http", "127.0.0.1:0", "--https", "off", "--amqp", "127.0.0.1:0", "--amqps", "off"}})
		cs := h.Owner
		m := hubMemory{b: b, pid: h.Endpoints.PID, metrics: "http://" + h.Endpoints.HTTP + "/metrics"}
		m0 := m.settled()
		var conns []*goamqp.Conn
		for range n {
			c, _ := amqpSender(b, h.Endpoints.AMQP, cs)
			conns = append(conns, c)
		}
		m.waitConnections(n)
		m1 := m.settled()
		var bare []net.Conn
		for range n {
			nc, err := net.Dial("tcp", h.Endpoints.AMQP)
			if err != nil {
				b.Fatal(err)
			}
			bare = append(bare, nc)
		}
		m.waitConnections(2 * n)
		m2 := m.settled()
		b.ReportMetric(float64(m1.rss-m0.rss)/n, "hub-RSS-B/amqp-conn")
		b.ReportMetric(float64(m1.heap-m0.heap)/n, "hub-heap-B/amqp-conn")
		b.ReportMetric(float64(m2.rss-m1.rss)/n, "hub-RSS-B/bare-tcp-conn")
		b.ReportMetric(float64(m2.heap-m1.heap)/n, "hub-heap-B/bare-tcp-conn")
		for _, c := range bare {
			_ = c.Close()
		}
		for _, c := range conns {
			_ = c.Close()
		}
		if err := h.Stop(); err != nil {
			b.Fatal(err)
		}
	}
}

type hubMemory struct {
	b       *testing.B
	pid     int
	metrics string
}

type memSample struct{ rss, heap int64 }

// settled samples over a second and keeps the last (Go gives memory back lazily; the window lets
// the GC cycle after a connect burst finish).
func (m hubMemory) settled() memSample {
	var s memSample
	for range 5 {
		time.Sleep(200 * time.Millisecond) // a measurement window, not synchronisation
		rss, _, err := bench.RSS(m.pid)
		if err != nil {
			m.b.Fatal(err)
		}
		s = memSample{rss: rss, heap: int64(m.metric("go_memstats_heap_inuse_bytes"))}
	}
	return s
}

// waitConnections waits until the hub reports n open AMQP connections.
func (m hubMemory) waitConnections(n int) {
	deadline := time.Now().Add(20 * time.Second)
	for m.metric("c2d_amqp_connections") != float64(n) {
		if time.Now().After(deadline) {
			m.b.Fatalf("hub reports %v AMQP connections after 20s, want %d", m.metric("c2d_amqp_connections"), n)
		}
		time.Sleep(20 * time.Millisecond) // polling the hub's gauge, with a deadline
	}
}

func (m hubMemory) metric(name string) float64 {
	resp, err := http.Get(m.metrics)
	if err != nil {
		m.b.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				m.b.Fatalf("metrics: %s: %v", sc.Text(), err)
			}
			return f
		}
	}
	m.b.Fatalf("hub's /metrics has no %s", name)
	return 0
}
