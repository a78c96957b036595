package hub

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
	"github.com/c2d-project/c2d/internal/pgtest"
)

// BenchmarkCompletedByStore: completed commands/s through one hub with 1,000 attached devices
// that complete at once, on SQLite and on PostgreSQL (the same machine, the same run), and the
// send → settle p50. The ratio postgres/sqlite is the figure (docs/benchmarks.md).
func BenchmarkCompletedByStore(b *testing.B) {
	const devices = 1000
	for _, kind := range []string{"sqlite", "postgres"} {
		b.Run(kind, func(b *testing.B) {
			var lat []time.Duration
			var latMu sync.Mutex
			var settled atomic.Int64
			all := make(chan struct{})
			var target atomic.Int64
			target.Store(1 << 62)
			cfg := Config{HostName: "hub.test", MaxQueueDepth: 100000, NodeID: "bench"}
			if kind == "postgres" {
				cfg.Store = pgtest.DB(b)
			}
			h, err := Open(context.Background(), b.TempDir(), cfg, Events{Settled: func(_ string, _ iothub.FeedbackStatus, d time.Duration) {
				latMu.Lock()
				lat = append(lat, d)
				latMu.Unlock()
				if settled.Add(1) == target.Load() {
					close(all)
				}
			}})
			if err != nil {
				b.Fatal(err)
			}
			defer h.Close()
			var wg sync.WaitGroup
			for i := range devices {
				id := fmt.Sprintf("d%04d", i)
				wg.Add(1)
				go func() {
					defer wg.Done()
					if _, _, err := h.PutDevice(context.Background(), iothub.Device{DeviceID: id}, ""); err != nil {
						b.Error(err)
					}
				}()
			}
			wg.Wait()
			stop := make(chan struct{})
			defer close(stop)
			for i := range devices {
				c := newConn(fmt.Sprintf("d%04d", i))
				h.Attach(c)
				go func() {
					for {
						select {
						case m := <-c.ch:
							if err := h.Settle(context.Background(), c.id, m.LockToken, iothub.DispositionComplete, ""); err != nil && !isClosed(err) {
								b.Error(err)
							}
						case <-stop:
							return
						}
					}
				}()
			}
			req := benchReq()
			req.Ack = iothub.AckNone
			latMu.Lock()
			lat = lat[:0]
			latMu.Unlock()
			target.Store(int64(b.N))
			var n atomic.Int64
			st := h.st.(*sqlStore)
			stmts0, commits0, cpu0, pg0 := st.stmts.Load(), st.commits.Load(), processCPU(), pgtest.CPU()
			b.ResetTimer()
			var senders sync.WaitGroup
			for range 64 {
				senders.Add(1)
				go func() {
					defer senders.Done()
					for {
						i := n.Add(1)
						if i > int64(b.N) {
							return
						}
						if _, err := h.Send(context.Background(), fmt.Sprintf("d%04d", i%devices), req); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			senders.Wait()
			select {
			case <-all:
			case <-time.After(time.Minute):
				b.Fatalf("%d of %d settled", settled.Load(), b.N)
			}
			b.StopTimer()
			// Deterministic figures beside the noisy rate: the store's statements and commits per
			// command, and the hub's own CPU per command (the test process; PostgreSQL's is apart).
			b.ReportMetric(float64(st.stmts.Load()-stmts0)/float64(b.N), "stmts/cmd")
			b.ReportMetric(float64(b.N)/float64(st.commits.Load()-commits0), "cmds/commit")
			b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/float64(b.N), "cpu-µs/cmd")
			if kind == "postgres" {
				// The server's CPU per command (its processes apart from this one; 10 ms ticks).
				b.ReportMetric(float64((pgtest.CPU()-pg0).Microseconds())/float64(b.N), "pg-cpu-µs/cmd")
			}
			latMu.Lock()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "settled-p50-ms")
			latMu.Unlock()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "completed/s")
		})
	}
}

// processCPU is the CPU time (user + system) this process used so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
