package bench

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// A Target is one figure issue #14 holds the hub and agent to, taken from a Report.
type Target struct {
	Name   string  // what a reader of the table calls it
	Key    string  // the figure's name in messages and bench.json's ratios
	Unit   string  // "×", "KiB", "MiB"
	Limit  float64 // the target
	AtMost bool    // the figure must be ≤ Limit (else ≥)
	// value reads the figure; ok is false when the report does not have it (a section not run).
	value func(*Report) (v float64, ok bool)
	Hint  string // how to get the figure when it is missing
}

// A Result is one target checked against a report.
type Result struct {
	Target
	Value   float64
	Missing bool
	Met     bool
}

func (r Result) String() string {
	op := "≥"
	if r.AtMost {
		op = "≤"
	}
	switch {
	case r.Missing:
		return fmt.Sprintf("MISSING %s (%s): not in the report (%s); target %s %g %s", r.Name, r.Key, r.Hint, op, r.Limit, r.Unit)
	case r.Met:
		return fmt.Sprintf("ok      %s (%s): %.2f %s, target %s %g %s", r.Name, r.Key, r.Value, r.Unit, op, r.Limit, r.Unit)
	default:
		return fmt.Sprintf("MISSED  %s (%s): %.2f %s, target %s %g %s", r.Name, r.Key, r.Value, r.Unit, op, r.Limit, r.Unit)
	}
}

func ratio(key string) func(*Report) (float64, bool) {
	return func(rep *Report) (float64, bool) { v, ok := rep.Ratios[key]; return v, ok }
}

func agentBytes(f func(*AgentFootprint) int64) func(*Report) (float64, bool) {
	return func(rep *Report) (float64, bool) {
		if rep.Agent == nil || f(rep.Agent) <= 0 {
			return 0, false
		}
		return mib(f(rep.Agent)), true
	}
}

// DurableVsRawKey is the ratio of c2d-agent's settled p50 — send → action → complete → the
// outcome durable (the hub's PUBACK of the agent's disposition, LatencyRow.Durable) — to the raw
// QoS 1 round trip through plain mochi.
const DurableVsRawKey = "durable_p50_agent_vs_raw_mochi"

// FeedbackVsDurableKey is the ratio of c2d-agent's send → feedback p50 to its settled p50 (as in
// DurableVsRawKey). Reports from before the durable instant was measured have neither ratio: their
// "settled" was the hub's settledTimeUtc, taken before the settle's commit.
const FeedbackVsDurableKey = "feedback_p50_vs_durable_p50_agent"

// PostgresVsSQLiteKey is the ratio of one node's completed commands/s on PostgreSQL to one node's
// on SQLite, in the cluster section's run (1,000 devices).
const PostgresVsSQLiteKey = "postgresql_1_node_vs_sqlite_1_node_completed"

// Targets are issue #14's "done when" figures and the cluster issue's (#11) store ratio.
var Targets = []Target{
	{Name: "completed commands/s with 1,000 devices vs raw QoS 1 through plain mochi", Key: "throughput_1000_devices_vs_raw_mochi",
		Unit: "×", Limit: 0.5, value: ratio("throughput_1000_devices_vs_raw_mochi"), Hint: "run the throughput section with 1000 devices"},
	{Name: "c2d-agent settled p50 (send → action → complete → durable) vs raw QoS 1 round trip through plain mochi", Key: DurableVsRawKey,
		Unit: "×", Limit: 5, AtMost: true, value: ratio(DurableVsRawKey), Hint: "run the latency section"},
	{Name: "c2d-agent send → feedback p50 vs its settled (durable) p50", Key: FeedbackVsDurableKey,
		Unit: "×", Limit: 2, AtMost: true, value: ratio(FeedbackVsDurableKey), Hint: "run the latency section"},
	{Name: "hub memory per idle connected device, 10,000 devices", Key: "hub_kib_per_idle_device_10000",
		Unit: "KiB", Limit: 40, AtMost: true, Hint: "run the fleet section with 10000 devices",
		value: func(rep *Report) (float64, bool) {
			for _, f := range rep.Fleet {
				if f.Devices == 10000 && strings.HasPrefix(f.Name, "c2d-hub") {
					return f.PerDevice / 1024, true
				}
			}
			return 0, false
		}},
	{Name: "one node on PostgreSQL vs one node on SQLite, completed commands/s with 1,000 devices", Key: PostgresVsSQLiteKey,
		Unit: "×", Limit: 0.5, value: ratio(PostgresVsSQLiteKey), Hint: "run the cluster section (needs PostgreSQL installed)"},
	{Name: "c2d-agent idle RSS", Key: "agent_rss_idle", Unit: "MiB", Limit: 12, AtMost: true,
		value: agentBytes(func(a *AgentFootprint) int64 { return a.RSSIdle }), Hint: "run the agent section"},
	{Name: "c2d-agent peak RSS after load", Key: "agent_rss_peak", Unit: "MiB", Limit: 16, AtMost: true,
		value: agentBytes(func(a *AgentFootprint) int64 { return max(a.HWMLoad, a.RSSLoad) }), Hint: "run the agent section"},
}

// Check compares a report's figures with targets; a figure the report lacks is Missing (and not
// Met: a guard that passes because nothing was measured guards nothing).
func Check(rep *Report, targets []Target) []Result {
	out := make([]Result, 0, len(targets))
	for _, t := range targets {
		v, ok := t.value(rep)
		met := ok && (t.AtMost && v <= t.Limit || !t.AtMost && v >= t.Limit)
		out = append(out, Result{Target: t, Value: v, Missing: !ok, Met: met})
	}
	return out
}

// ErrTargetsMissed is what CheckReport returns when a figure misses its target or is missing.
var ErrTargetsMissed = errors.New("benchmark targets missed")

// CheckReport writes one line per target to w and returns an error naming every figure that
// missed its target (with its value and the target) or is missing, wrapping ErrTargetsMissed.
func CheckReport(w io.Writer, rep *Report, targets []Target) error {
	var bad []string
	for _, r := range Check(rep, targets) {
		fmt.Fprintln(w, r)
		if r.Met {
			continue
		}
		op := "≥"
		if r.AtMost {
			op = "≤"
		}
		if r.Missing {
			bad = append(bad, fmt.Sprintf("%s missing (target %s %g %s)", r.Key, op, r.Limit, r.Unit))
		} else {
			bad = append(bad, fmt.Sprintf("%s %.2f %s (target %s %g %s)", r.Key, r.Value, r.Unit, op, r.Limit, r.Unit))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("%w: %d of %d: %s", ErrTargetsMissed, len(bad), len(targets), strings.Join(bad, "; "))
	}
	return nil
}

// ReadReport reads a bench.json; Validate says whether it is a complete report.
func ReadReport(path string) (*Report, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var rep Report
	if err := dec.Decode(&rep); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return &rep, nil
}

// Validate checks that a report holds what a run of sections produces: each row measured (samples
// taken, rates and sizes positive). It checks no figure against a target: that is Check's job.
func (rep *Report) Validate(sections []string) error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if rep.Started.IsZero() || rep.Took == "" {
		bad("no start time or duration")
	}
	for _, s := range sections {
		switch s {
		case "fsync":
			if rep.Fsync == nil || rep.Fsync.N == 0 || rep.Fsync.P50 <= 0 {
				bad("fsync: no samples")
			}
		case "latency":
			if len(rep.Latency) == 0 {
				bad("latency: no rows")
			}
			for _, l := range rep.Latency {
				if l.Feedback.N == 0 || l.Feedback.P50 <= 0 || l.Feedback.P50 > l.Feedback.Max {
					bad("latency %s: %+v is not a measured distribution", l.Name, l.Feedback)
				}
				if l.Send == nil {
					continue // a raw baseline: no hub
				}
				if l.Name == "c2d-agent" && (l.Durable == nil || l.Durable.N == 0 || l.Durable.P50 <= 0) {
					bad("latency c2d-agent: no durable instant (send → the hub's PUBACK of its disposition)")
				}
				// The hub's per-stage breakdown (stages.go); the feedback stage counts only
				// receives that waited, which a row with several commands outstanding may lack.
				for _, st := range stageNames {
					if c := l.Stages[st].Count; c <= 0 && st != "feedback" {
						bad("latency %s: no hub stage %s", l.Name, st)
					}
				}
			}
			if _, ok := rep.Ratios[FeedbackVsDurableKey]; !ok {
				bad("latency: no %s ratio", FeedbackVsDurableKey)
			}
		case "throughput":
			if len(rep.Throughput) == 0 {
				bad("throughput: no rows")
			}
			amqp := false
			for _, t := range rep.Throughput {
				if t.PerSec <= 0 || t.Messages <= 0 {
					bad("throughput %s/%d: %.1f/s over %d messages", t.Name, t.Devices, t.PerSec, t.Messages)
				}
				amqp = amqp || t.Name == AMQPCompletedRow
			}
			if !amqp {
				bad("throughput: no %q row", AMQPCompletedRow)
			}
		case "fleet":
			if len(rep.Fleet) == 0 {
				bad("fleet: no rows")
			}
			for _, f := range rep.Fleet {
				if f.Devices <= 0 || f.RSSAfter <= 0 {
					bad("fleet %s/%d: RSS after %d", f.Name, f.Devices, f.RSSAfter)
				}
			}
		case "agent":
			if rep.Agent == nil || rep.Agent.RSSIdle <= 0 || rep.Agent.BinaryBytes <= 0 {
				bad("agent: no footprint")
			}
		default:
			bad("unknown section %q", s)
		}
	}
	return errors.Join(errs...)
}
