package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/c2d-project/c2d/cloud/apiclient"
	"github.com/c2d-project/c2d/cloud/iothub"
	"github.com/c2d-project/c2d/internal/pgtest"
)

// ClusterReport is the "cluster" section: c2d-hub nodes on one PostgreSQL (started by the bench,
// fsync on), one node and three nodes in the same run, every process on this machine.
type ClusterReport struct {
	Rows []ClusterRow `json:"rows"`
}

// ClusterRow is one configuration.
type ClusterRow struct {
	Store    string  `json:"store"` // "postgresql" or "sqlite" (the single-node default, for reference)
	Nodes    int     `json:"nodes"`
	Devices  int     `json:"devices"`  // connected, spread evenly over the nodes
	Messages int     `json:"messages"` // sent through the nodes' APIs in turn
	PerSec   float64 `json:"completed_per_sec"`
	SendsSec float64 `json:"sends_per_sec"`
	// Idle memory: (VmRSS with the devices connected − VmRSS before) ÷ devices on that node.
	PerDeviceKiB []float64 `json:"idle_kib_per_device_per_node"`
	RSSBefore    []int64   `json:"rss_before_bytes_per_node"`
	RSSAfter     []int64   `json:"rss_after_bytes_per_node"`
}

const clusterDevices = 999 // 333 per node in the three-node row

func clusterHubConfig(store, node string) string {
	return benchHubConfig + fmt.Sprintf("store: %q\nnode_id: %q\n", store, node)
}

func (r *runner) cluster(ctx context.Context) error {
	pg, err := pgtest.Start()
	if errors.Is(err, pgtest.ErrMissing) {
		r.note("cluster section skipped: %v", err)
		return nil
	} else if err != nil {
		return err
	}
	defer pg.Stop()
	rep := &ClusterReport{}
	for _, run := range []struct {
		store string
		nodes int
	}{{"sqlite", 1}, {"postgresql", 1}, {"postgresql", 3}} {
		store := "sqlite"
		if run.store == "postgresql" {
			if store, err = pg.NewDB(ctx); err != nil {
				return err
			}
		}
		row, err := r.clusterRun(ctx, store, run.nodes)
		if err != nil {
			return fmt.Errorf("%s, %d node(s): %w", run.store, run.nodes, err)
		}
		row.Store = run.store
		rep.Rows = append(rep.Rows, row)
	}
	r.rep.Cluster = rep
	clusterRatios(rep, r.rep.Ratios)
	return nil
}

// clusterRatios adds the section's ratios: PostgreSQL's one node over SQLite's one node, three
// PostgreSQL nodes over one. Rows are found by what they measured, not by their position, so a
// section that gains or reorders rows cannot pair the wrong two; a missing or empty row gives no
// ratio (a missing figure, not a zero that passes a ≤ target).
func clusterRatios(rep *ClusterReport, ratios map[string]float64) {
	perSec := func(store string, nodes int) float64 {
		for _, r := range rep.Rows {
			if r.Store == store && r.Nodes == nodes {
				return r.PerSec
			}
		}
		return 0
	}
	lite, one, three := perSec("sqlite", 1), perSec("postgresql", 1), perSec("postgresql", 3)
	if one > 0 && three > 0 {
		ratios["cluster_3_nodes_vs_1_node_completed"] = round2(three / one)
	}
	if lite > 0 && one > 0 {
		ratios[PostgresVsSQLiteKey] = round2(one / lite)
	}
}

func (r *runner) clusterRun(ctx context.Context, store string, nodes int) (ClusterRow, error) {
	hubs := make([]*HubProc, nodes)
	defer func() {
		for _, h := range hubs {
			if h != nil {
				h.Close()
			}
		}
	}()
	kind := "pg"
	if store == "sqlite" {
		kind = "sqlite"
	}
	for i := range hubs {
		name := fmt.Sprintf("cluster-%s%d-n%d", kind, nodes, i+1)
		h, err := StartHub(ctx, HubOptions{Bin: r.cfg.HubBin, DataDir: filepath.Join(r.cfg.WorkDir, name), Config: clusterHubConfig(store, name), Store: store})
		if err != nil {
			return ClusterRow{}, err
		}
		hubs[i] = h
	}
	key := NewKey()
	devs := ids(fmt.Sprintf("cl%s%d", kind, nodes), clusterDevices)
	if err := RegisterDevices(ctx, hubs[0].Client(), devs, key, 16); err != nil {
		return ClusterRow{}, err
	}
	row := ClusterRow{Nodes: nodes, Devices: len(devs), Messages: r.cfg.ClusterMessages}
	for _, h := range hubs {
		row.RSSBefore = append(row.RSSBefore, settledRSS(h.PID()))
	}
	var got atomic.Int64
	var conns []*LiteClient
	defer func() { CloseAll(conns) }()
	per := len(devs) / nodes
	for i, h := range hubs {
		cl, err := DialDevices(ctx, h.Endpoints.MQTT, devs[i*per:(i+1)*per], key, r.cfg.ConnectConcurrency, func(string, *iothub.Message) { got.Add(1) })
		if err != nil {
			return ClusterRow{}, err
		}
		conns = append(conns, cl...)
	}
	for i, h := range hubs {
		if !WaitFor(ctx, time.Minute, 20*time.Millisecond, func() bool {
			st, err := h.Client().Status(ctx)
			return err == nil && st.ConnectedDeviceCount >= per
		}) {
			return ClusterRow{}, fmt.Errorf("node %d does not report %d connected devices", i+1, per)
		}
	}
	for i, h := range hubs {
		rss := settledRSS(h.PID())
		row.RSSAfter = append(row.RSSAfter, rss)
		row.PerDeviceKiB = append(row.PerDeviceKiB, float64(rss-row.RSSBefore[i])/float64(per)/1024)
	}

	// Completed commands: senders spread over the nodes' APIs, each to any device, so with three
	// nodes two sends in three go to a device held by another node (the NOTIFY wake-up path).
	clients := make([]*apiclient.Client, nodes)
	for i, h := range hubs {
		clients[i] = h.Client()
	}
	S, C := r.cfg.ClusterMessages, r.cfg.ThroughputSenders
	t0 := time.Now()
	err := parallel2(ctx, S, C, func(i int) error {
		_, err := clients[i%nodes].Send(ctx, devs[(i*7)%len(devs)], iothub.SendRequest{Properties: []iothub.AppProperty{{Name: "target", Value: "out1"}, {Name: "action", Value: "toggle"}}})
		return err
	})
	if err != nil {
		return ClusterRow{}, err
	}
	sendEl := time.Since(t0)
	ok := WaitFor(ctx, 5*time.Minute, 5*time.Millisecond, func() bool {
		if got.Load() < int64(S) {
			return false
		}
		st, err := clients[0].Status(ctx)
		return err == nil && st.QueuedMessageCount == 0
	})
	el := time.Since(t0)
	if !ok {
		return ClusterRow{}, fmt.Errorf("queue not drained (%d of %d received)", got.Load(), S)
	}
	row.PerSec, row.SendsSec = float64(S)/el.Seconds(), float64(S)/sendEl.Seconds()
	if got.Load() != int64(S) {
		r.note("cluster, %d nodes: %d deliveries for %d messages (redeliveries)", nodes, got.Load(), S)
	}
	r.logf("cluster, %d node(s) on %s, %d devices: %.0f completed/s (sends %.0f/s), idle KiB/device per node %.1f",
		nodes, kind, len(devs), row.PerSec, row.SendsSec, row.PerDeviceKiB)
	return row, nil
}

func (rep *Report) printCluster(tw io.Writer) {
	c := rep.Cluster
	if c == nil {
		return
	}
	fmt.Fprintln(tw, "CLUSTER (nodes on one store, all on this machine)\tdevices\tmessages\tcompleted/s\tsends/s\tidle KiB/device per node\t")
	for _, r := range c.Rows {
		kib := ""
		for i, k := range r.PerDeviceKiB {
			if i > 0 {
				kib += " / "
			}
			kib += fmt.Sprintf("%.1f", k)
		}
		fmt.Fprintf(tw, "%d node(s) on %s\t%d\t%d\t%.0f\t%.0f\t%s\t\n", r.Nodes, r.Store, r.Devices, r.Messages, r.PerSec, r.SendsSec, kib)
	}
	fmt.Fprintln(tw, "  (the sqlite row is the single-node default, for reference; a cluster needs PostgreSQL)")
	fmt.Fprintln(tw)
}
