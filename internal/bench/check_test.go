package bench

import (
	"bytes"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// passing is a report meeting every target, each figure near its limit.
func passing() *Report {
	return &Report{
		Started: time.Date(2026, 12, 3, 11, 26, 0, 0, time.UTC), Took: "1m",
		Ratios: map[string]float64{
			"throughput_1000_devices_vs_raw_mochi": 0.5,
			DurableVsRawKey:                        5,
			FeedbackVsDurableKey:                   1.99,
			PostgresVsSQLiteKey:                    0.5,
		},
		Fleet: []FleetRow{
			{Name: "plain mochi (no hooks)", Devices: 10000, PerDevice: 90 * 1024}, // not the hub's row
			{Name: "c2d-hub (auth, session attach, queue)", Devices: 1000, PerDevice: 80 * 1024},
			{Name: "c2d-hub (auth, session attach, queue)", Devices: 10000, PerDevice: 40 * 1024},
		},
		Agent: &AgentFootprint{RSSIdle: 12 << 20, RSSLoad: 15 << 20, HWMLoad: 16 << 20},
	}
}

func TestCheckPassesAtTheLimits(t *testing.T) {
	var out bytes.Buffer
	if err := CheckReport(&out, passing(), Targets); err != nil {
		t.Fatalf("CheckReport: %v\n%s", err, &out)
	}
	if n := strings.Count(out.String(), "ok      "); n != len(Targets) {
		t.Fatalf("%d ok lines for %d targets:\n%s", n, len(Targets), &out)
	}
}

// Each figure just past its target fails the check, and the error names it with its value and
// the target; the other figures stay ok.
func TestCheckNamesEachMissedFigure(t *testing.T) {
	cases := []struct {
		key, want string
		spoil     func(*Report)
	}{
		{"throughput_1000_devices_vs_raw_mochi", "0.49 × (target ≥ 0.5 ×)", func(r *Report) { r.Ratios["throughput_1000_devices_vs_raw_mochi"] = 0.49 }},
		{DurableVsRawKey, "5.01 × (target ≤ 5 ×)", func(r *Report) { r.Ratios[DurableVsRawKey] = 5.01 }},
		{FeedbackVsDurableKey, "6.10 × (target ≤ 2 ×)", func(r *Report) { r.Ratios[FeedbackVsDurableKey] = 6.1 }},
		{"hub_kib_per_idle_device_10000", "76.20 KiB (target ≤ 40 KiB)", func(r *Report) { r.Fleet[2].PerDevice = 76.2 * 1024 }},
		{PostgresVsSQLiteKey, "0.48 × (target ≥ 0.5 ×)", func(r *Report) { r.Ratios[PostgresVsSQLiteKey] = 0.48 }},
		{"agent_rss_idle", "12.50 MiB (target ≤ 12 MiB)", func(r *Report) { r.Agent.RSSIdle = 12<<20 + 512<<10 }},
		{"agent_rss_peak", "17.00 MiB (target ≤ 16 MiB)", func(r *Report) { r.Agent.RSSLoad = 17 << 20 }},
	}
	for _, c := range cases {
		t.Run(c.key, func(t *testing.T) {
			rep := passing()
			c.spoil(rep)
			var out bytes.Buffer
			err := CheckReport(&out, rep, Targets)
			if !errors.Is(err, ErrTargetsMissed) {
				t.Fatalf("CheckReport = %v, want ErrTargetsMissed\n%s", err, &out)
			}
			if !strings.Contains(err.Error(), c.key+" "+c.want) || !strings.Contains(err.Error(), "1 of 7") {
				t.Fatalf("error %q does not name %s %s as the one miss", err, c.key, c.want)
			}
			if !strings.Contains(out.String(), "MISSED  ") || strings.Count(out.String(), "ok      ") != len(Targets)-1 {
				t.Fatalf("output:\n%s", &out)
			}
		})
	}
}

// A report without a figure (a section not run) does not pass: a guard that measured nothing
// guards nothing.
func TestCheckFailsOnMissingFigures(t *testing.T) {
	var out bytes.Buffer
	err := CheckReport(&out, &Report{Ratios: map[string]float64{}}, Targets)
	if !errors.Is(err, ErrTargetsMissed) || !strings.Contains(err.Error(), "7 of 7") ||
		!strings.Contains(err.Error(), "hub_kib_per_idle_device_10000 missing (target ≤ 40 KiB)") {
		t.Fatalf("CheckReport on an empty report = %v", err)
	}
	if strings.Count(out.String(), "MISSING ") != len(Targets) {
		t.Fatalf("output:\n%s", &out)
	}
}

// The latency targets' ratios are computed from the c2d-agent row's durable instant, never from
// its settledTimeUtc (taken before the settle's commit).
func TestRatiosUseTheDurableInstant(t *testing.T) {
	r := &runner{rep: &Report{Ratios: map[string]float64{}, Latency: []LatencyRow{
		{Name: "c2d-agent", Feedback: Dist{P50: 6}, SettledTimeUTC: &Dist{P50: 1.5}, Durable: &Dist{P50: 2.4}},
		{Name: "lite-1", Feedback: Dist{P50: 100}, SettledTimeUTC: &Dist{P50: 1}},
		{Name: "raw-mochi", Feedback: Dist{P50: 0.2}},
		{Name: "raw-mochi-tapped", Feedback: Dist{P50: 0.25}},
	}}}
	r.ratios()
	want := map[string]float64{FeedbackVsDurableKey: 2.5, DurableVsRawKey: 12}
	for k, v := range want {
		if got, ok := r.rep.Ratios[k]; !ok || got != v {
			t.Errorf("%s = %v (present %v), want %v", k, got, ok, v)
		}
	}
	// Without the durable column (a report from before it, or a row not tapped) there is no
	// latency target figure at all: bench-check says MISSING rather than judging settledTimeUtc.
	r = &runner{rep: &Report{Ratios: map[string]float64{}, Latency: []LatencyRow{
		{Name: "c2d-agent", Feedback: Dist{P50: 6}, SettledTimeUTC: &Dist{P50: 1.5}},
		{Name: "raw-mochi", Feedback: Dist{P50: 0.2}},
	}}}
	r.ratios()
	for _, k := range []string{FeedbackVsDurableKey, DurableVsRawKey} {
		if v, ok := r.rep.Ratios[k]; ok {
			t.Errorf("%s = %v from a row without the durable instant", k, v)
		}
	}
}

// The cluster section's ratios come from its rows: PostgreSQL's one node over SQLite's one node,
// three nodes over one (both on PostgreSQL).
func TestClusterRatios(t *testing.T) {
	ratios := map[string]float64{}
	// In another order than the section runs them: rows are paired by store and node count.
	clusterRatios(&ClusterReport{Rows: []ClusterRow{
		{Store: "postgresql", Nodes: 3, PerSec: 1050},
		{Store: "sqlite", Nodes: 1, PerSec: 4000},
		{Store: "postgresql", Nodes: 1, PerSec: 2100},
	}}, ratios)
	if got := ratios[PostgresVsSQLiteKey]; got != 0.53 {
		t.Errorf("%s = %v, want 2100 / 4000 rounded = 0.53", PostgresVsSQLiteKey, got)
	}
	if got := ratios["cluster_3_nodes_vs_1_node_completed"]; got != 0.5 {
		t.Errorf("3 nodes vs 1 = %v, want 1050 / 2100 = 0.5", got)
	}
	// A row that measured nothing gives no ratio (a missing figure, not a zero that passes ≤).
	ratios = map[string]float64{}
	clusterRatios(&ClusterReport{Rows: []ClusterRow{{Store: "sqlite", Nodes: 1}, {Store: "postgresql", Nodes: 1, PerSec: 1}, {Store: "postgresql", Nodes: 3, PerSec: 1}}}, ratios)
	if _, ok := ratios[PostgresVsSQLiteKey]; ok {
		t.Errorf("ratio over a zero SQLite row: %v", ratios)
	}
	// Without a three-node row there is no scale-out ratio, and PostgreSQL's still stands.
	ratios = map[string]float64{}
	clusterRatios(&ClusterReport{Rows: []ClusterRow{{Store: "sqlite", Nodes: 1, PerSec: 4}, {Store: "postgresql", Nodes: 1, PerSec: 2}}}, ratios)
	if _, ok := ratios["cluster_3_nodes_vs_1_node_completed"]; ok || ratios[PostgresVsSQLiteKey] != 0.5 {
		t.Errorf("ratios without a three-node row: %v, want only %s = 0.5", ratios, PostgresVsSQLiteKey)
	}
}

func TestReadReportValidate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bench.json")
	rep := passing()
	rep.Agent.BinaryBytes = 7 << 20
	rep.Fsync = &Dist{N: 10, P50: 0.2, Max: 0.5}
	if err := rep.WriteJSON(path); err != nil {
		t.Fatal(err)
	}
	got, err := ReadReport(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := got.Validate([]string{"fsync", "agent"}); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	err = got.Validate([]string{"latency", "throughput"})
	if err == nil || !strings.Contains(err.Error(), "latency: no rows") || !strings.Contains(err.Error(), "throughput: no rows") {
		t.Fatalf("Validate of a report without latency and throughput rows = %v", err)
	}
}

// A c2d latency row without the hub's stage breakdown is incomplete; a raw baseline has none.
func TestValidateWantsHubStages(t *testing.T) {
	stages := map[string]StageStat{}
	for _, n := range stageNames {
		stages[n] = StageStat{Count: 10, MeanMS: 0.5, P50MS: 0.4}
	}
	d := Dist{N: 10, P50: 3, Max: 9}
	rep := &Report{Started: time.Now(), Took: "1s", Ratios: map[string]float64{FeedbackVsDurableKey: 1.5}, Latency: []LatencyRow{
		{Name: "c2d-agent", Feedback: d, Send: &d, SettledTimeUTC: &d, Durable: &d, Stages: stages},
		{Name: "raw-mochi", Feedback: d},
	}}
	if err := rep.Validate([]string{"latency"}); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	delete(stages, "deliver")
	delete(stages, "feedback") // allowed to be absent
	err := rep.Validate([]string{"latency"})
	if err == nil || !strings.Contains(err.Error(), "latency c2d-agent: no hub stage deliver") || strings.Contains(err.Error(), "feedback") {
		t.Fatalf("Validate without the deliver and feedback stages = %v; want only deliver named", err)
	}
	stages["deliver"] = StageStat{Count: 10, MeanMS: 0.5, P50MS: 0.4}
	rep.Latency[0].Durable = nil
	err = rep.Validate([]string{"latency"})
	if err == nil || !strings.Contains(err.Error(), "latency c2d-agent: no durable instant") {
		t.Fatalf("Validate of a c2d-agent row without its durable column = %v", err)
	}
}

// The AMQP-sent row has a ratio of its own: it must never stand in for the HTTP row's, which is
// the target's figure. Validate wants the row in a throughput section.
func TestAMQPRowHasItsOwnRatio(t *testing.T) {
	r := &runner{rep: &Report{Started: time.Now(), Took: "1s", Ratios: map[string]float64{}, Throughput: []ThroughputRow{
		{Name: "c2d completed commands (send → PUBACK → Completed)", Devices: 1000, Messages: 10, PerSec: 100},
		{Name: AMQPCompletedRow, Devices: 1000, Messages: 10, PerSec: 300},
		{Name: "raw QoS 1 via plain mochi", Devices: 1000, Messages: 10, PerSec: 1000},
	}}}
	r.ratios()
	want := map[string]float64{"throughput_1000_devices_vs_raw_mochi": 0.1, "throughput_1000_devices_amqp_vs_raw_mochi": 0.3}
	for k, v := range want {
		if got, ok := r.rep.Ratios[k]; !ok || got != v {
			t.Errorf("%s = %v (present %v), want %v", k, got, ok, v)
		}
	}
	if err := r.rep.Validate([]string{"throughput"}); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	r.rep.Throughput = append(r.rep.Throughput[:1], r.rep.Throughput[2:]...)
	if err := r.rep.Validate([]string{"throughput"}); err == nil || !strings.Contains(err.Error(), AMQPCompletedRow) {
		t.Fatalf("Validate without the AMQP row = %v", err)
	}
}
