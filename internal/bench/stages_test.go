package bench

import (
	"strings"
	"testing"
)

// A scrape pair becomes per-stage count, mean and interpolated median of what happened between
// them; other families and stages that saw nothing are left out.
func TestStageSnapshotSince(t *testing.T) {
	parse := func(text string) stageSnapshot {
		t.Helper()
		s := stageSnapshot{}
		for _, line := range strings.Split(text, "\n") {
			if err := s.parseLine(line); err != nil {
				t.Fatal(err)
			}
		}
		return s
	}
	before := parse(`# HELP c2d_stage_seconds x
c2d_stage_seconds_bucket{stage="commit",le="0.001"} 10
c2d_stage_seconds_bucket{stage="commit",le="0.002"} 10
c2d_stage_seconds_bucket{stage="commit",le="+Inf"} 10
c2d_stage_seconds_sum{stage="commit"} 0.005
c2d_stage_seconds_count{stage="commit"} 10
c2d_stage_seconds_bucket{stage="settle",le="0.001"} 3
c2d_stage_seconds_bucket{stage="settle",le="+Inf"} 3
c2d_stage_seconds_sum{stage="settle"} 0.001
c2d_stage_seconds_count{stage="settle"} 3
c2d_http_request_duration_seconds_count{route="x"} 99`)
	// 20 more commits: 4 under 1 ms, 16 between 1 and 2 ms, 30 ms in all; no more settles.
	after := parse(`c2d_stage_seconds_bucket{stage="commit",le="0.001"} 14
c2d_stage_seconds_bucket{stage="commit",le="0.002"} 30
c2d_stage_seconds_bucket{stage="commit",le="+Inf"} 30
c2d_stage_seconds_sum{stage="commit"} 0.035
c2d_stage_seconds_count{stage="commit"} 30
c2d_stage_seconds_bucket{stage="settle",le="0.001"} 3
c2d_stage_seconds_bucket{stage="settle",le="+Inf"} 3
c2d_stage_seconds_sum{stage="settle"} 0.001
c2d_stage_seconds_count{stage="settle"} 3`)
	got := after.since(before)
	if len(got) != 1 {
		t.Fatalf("since = %+v: want only commit", got)
	}
	c := got["commit"]
	// Median: the 10th of 20; 4 below 1 ms, so 6 of the 16 in (1, 2] ms: 1 + 6/16 ms.
	if c.Count != 20 || c.MeanMS != 1.5 || c.P50MS != 1.375 {
		t.Fatalf("commit = %+v, want count 20, mean 1.5 ms, p50 1.375 ms", c)
	}
	for _, bad := range []string{`c2d_stage_seconds_sum 1`, `c2d_stage_seconds_sum{le="1"} 1`, `c2d_stage_seconds_count{stage="x"} many`} {
		if err := (stageSnapshot{}).parseLine(bad); err == nil {
			t.Errorf("parseLine(%q) accepted it", bad)
		}
	}
}
