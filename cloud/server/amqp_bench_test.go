package server_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	goamqp "github.com/Azure/go-amqp"

	"github.com/c2d-project/c2d/cloud/apiclient"
	"github.com/c2d-project/c2d/cloud/iothub"
	"github.com/c2d-project/c2d/cloud/server"
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
	cbsOut, err := sess.NewSender(ctx, "$cbs", nil)
	if err != nil {
		b.Fatal(err)
	}
	cbsIn, err := sess.NewReceiver(ctx, "$cbs", nil)
	if err != nil {
		b.Fatal(err)
	}
	replyTo := "cbs"
	if err := cbsOut.Send(ctx, &goamqp.Message{
		Properties:            &goamqp.MessageProperties{MessageID: "1", ReplyTo: &replyTo},
		ApplicationProperties: map[string]any{"operation": "put-token", "type": "servicebus.windows.net:sastoken", "name": audience},
		Value:                 tok,
	}, nil); err != nil {
		b.Fatal(err)
	}
	rep, err := cbsIn.Receive(ctx, nil)
	if err != nil || rep.ApplicationProperties["status-code"] != int32(200) {
		b.Fatalf("put-token: %v %v", rep, err)
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

// BenchmarkIdleAMQPConnection: heap per idle, authorized AMQP connection (one session, the $cbs
// links, one /messages/devicebound link), beside a bare TCP connection held open by the same
// process (the baseline: what the kernel socket and a reading goroutine cost).
func BenchmarkIdleAMQPConnection(b *testing.B) {
	s, _, cs := startAMQPHub(b)
	const n = 200
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapInuse
	}
	b.Run("baseline-tcp", func(b *testing.B) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		defer ln.Close()
		go func() {
			for {
				nc, err := ln.Accept()
				if err != nil {
					return
				}
				go func() { _, _ = io.Copy(io.Discard, nc) }()
			}
		}()
		for i := 0; i < b.N; i++ {
			before := heap()
			var conns []net.Conn
			for range n {
				nc, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					b.Fatal(err)
				}
				conns = append(conns, nc)
			}
			b.ReportMetric(float64(heap()-before)/n, "heap-B/conn")
			for _, c := range conns {
				_ = c.Close()
			}
		}
	})
	b.Run("amqp", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			before := heap()
			var conns []*goamqp.Conn
			for range n {
				c, _ := amqpSender(b, s.Endpoints().AMQP, cs)
				conns = append(conns, c)
			}
			// Client and server share the process: this is both ends of each connection.
			b.ReportMetric(float64(heap()-before)/n, "heap-B/conn(client+server)")
			for _, c := range conns {
				_ = c.Close()
			}
		}
	})
}
