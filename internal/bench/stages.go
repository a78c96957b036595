package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
)

// StageStat is one hub stage's share of a latency row: the hub's own c2d_stage_seconds histogram
// (cloud/hub/stages.go), scraped from /metrics before and after the row. The mean is exact (the
// histogram's sum over its count); the p50 is interpolated inside the histogram's buckets.
type StageStat struct {
	Count  int64   `json:"count"`
	MeanMS float64 `json:"mean_ms"`
	P50MS  float64 `json:"p50_ms"`
}

// stageNames are the hub's stages in path order (hub.Stages; repeated so the bench reads them
// from the hub process it measures, not from its own build).
var stageNames = []string{"decode_auth", "commit", "deliver", "settle", "feedback"}

// hist is one stage's histogram as scraped: cumulative bucket counts by upper bound.
type hist struct {
	sum     float64 // seconds
	count   int64
	buckets map[float64]int64 // le → cumulative count
}

// stageSnapshot is every stage's histogram at one scrape.
type stageSnapshot map[string]hist

// scrapeStages reads c2d_stage_seconds from the hub's /metrics (Prometheus text format).
func scrapeStages(ctx context.Context, httpAddr string) (stageSnapshot, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+httpAddr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape hub metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape hub metrics: %s", resp.Status)
	}
	snap := stageSnapshot{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		if err := snap.parseLine(sc.Text()); err != nil {
			return nil, fmt.Errorf("scrape hub metrics: %w", err)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("scrape hub metrics: %w", err)
	}
	return snap, nil
}

// parseLine takes one exposition line of c2d_stage_seconds; other lines are ignored.
func (s stageSnapshot) parseLine(line string) error {
	const family = "c2d_stage_seconds_"
	if !strings.HasPrefix(line, family) {
		return nil
	}
	rest := line[len(family):]
	kind, rest, ok := strings.Cut(rest, "{")
	if !ok {
		return fmt.Errorf("line %q: no labels", line)
	}
	labels, value, ok := strings.Cut(rest, "} ")
	if !ok {
		return fmt.Errorf("line %q: no value", line)
	}
	var stage, le string
	for _, kv := range strings.Split(labels, ",") {
		k, v, _ := strings.Cut(kv, "=")
		v = strings.Trim(v, `"`)
		switch k {
		case "stage":
			stage = v
		case "le":
			le = v
		}
	}
	if stage == "" {
		return fmt.Errorf("line %q: no stage label", line)
	}
	if f := strings.Fields(value); len(f) > 0 {
		value = f[0] // a timestamp may follow
	}
	v, err := strconv.ParseFloat(value, 64)
	if err != nil {
		return fmt.Errorf("line %q: %w", line, err)
	}
	h := s[stage]
	if h.buckets == nil {
		h.buckets = map[float64]int64{}
	}
	switch kind {
	case "sum":
		h.sum = v
	case "count":
		h.count = int64(v)
	case "bucket":
		ub := math.Inf(1)
		if le != "+Inf" {
			if ub, err = strconv.ParseFloat(le, 64); err != nil {
				return fmt.Errorf("line %q: le: %w", line, err)
			}
		}
		h.buckets[ub] = int64(v)
	}
	s[stage] = h
	return nil
}

// since is what happened between before and s, per stage with at least one observation.
func (s stageSnapshot) since(before stageSnapshot) map[string]StageStat {
	out := map[string]StageStat{}
	for name, a := range s {
		b := before[name]
		n := a.count - b.count
		if n <= 0 {
			continue
		}
		st := StageStat{Count: n, MeanMS: round3((a.sum - b.sum) / float64(n) * 1e3)}
		// Bucket deltas, then the upper bound's interpolation of the median.
		var ubs []float64
		for ub := range a.buckets {
			ubs = append(ubs, ub)
		}
		sort.Float64s(ubs)
		half := float64(n) / 2
		lo, prev := 0.0, int64(0)
		for _, ub := range ubs {
			c := a.buckets[ub] - b.buckets[ub]
			if float64(c) >= half {
				hi := ub
				if math.IsInf(hi, 1) {
					hi = lo // beyond the last bound: report the last bound
				}
				frac := 0.0
				if c > prev {
					frac = (half - float64(prev)) / float64(c-prev)
				}
				st.P50MS = round3((lo + (hi-lo)*frac) * 1e3)
				break
			}
			lo, prev = ub, c
		}
		out[name] = st
	}
	return out
}

func round3(ms float64) float64 { return math.Round(ms*1e3) / 1e3 }

// stagesLine is the log line's tail: each stage's mean.
func stagesLine(st map[string]StageStat) string {
	if len(st) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("; hub stages mean ms:")
	for _, n := range stageNames {
		if s, ok := st[n]; ok {
			fmt.Fprintf(&b, " %s %.3f", n, s.MeanMS)
		}
	}
	return b.String()
}

// outsideStages is the row's mean send → feedback minus the sum of the hub stages' means: what
// the hub's stages do not cover (HTTP transport both ways, the device from PUBLISH to its
// disposition, the wire, the hand-offs between stages). ok is false without stage figures.
func (l LatencyRow) outsideStages() (ms float64, ok bool) {
	if len(l.Stages) == 0 {
		return 0, false
	}
	ms = l.Feedback.Mean
	for _, s := range l.Stages {
		ms -= s.MeanMS
	}
	return round3(ms), true
}

// printStages writes the LATENCY STAGES table: per row, each hub stage's mean (p50) and what lies
// outside them.
func (rep *Report) printStages(w io.Writer) {
	has := false
	for _, l := range rep.Latency {
		has = has || len(l.Stages) > 0
	}
	if !has {
		return
	}
	fmt.Fprint(w, "LATENCY STAGES (hub, mean / p50 ms)\t")
	for _, n := range stageNames {
		fmt.Fprintf(w, "%s\t", n)
	}
	fmt.Fprintln(w, "send→feedback mean\toutside the stages\t")
	for _, l := range rep.Latency {
		if len(l.Stages) == 0 {
			continue
		}
		fmt.Fprintf(w, "%s\t", l.Name)
		for _, n := range stageNames {
			if s, ok := l.Stages[n]; ok {
				fmt.Fprintf(w, "%.3f / %.3f\t", s.MeanMS, s.P50MS)
			} else {
				fmt.Fprint(w, "-\t")
			}
		}
		out, _ := l.outsideStages()
		fmt.Fprintf(w, "%.3f\t%.3f\t\n", l.Feedback.Mean, out)
	}
	fmt.Fprintln(w)
}
