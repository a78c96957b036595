package bench

import (
	"math"
	"sort"
	"time"
)

// Dist summarises latency samples (milliseconds in JSON).
type Dist struct {
	N    int     `json:"n"`
	Mean float64 `json:"mean_ms"`
	P50  float64 `json:"p50_ms"`
	P95  float64 `json:"p95_ms"`
	P99  float64 `json:"p99_ms"`
	Max  float64 `json:"max_ms"`
}

// Summarise sorts samples and computes the nearest-rank percentiles.
func Summarise(samples []time.Duration) Dist {
	if len(samples) == 0 {
		return Dist{}
	}
	s := append([]time.Duration(nil), samples...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	ms := func(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }
	pct := func(p float64) float64 {
		i := int(math.Ceil(p/100*float64(len(s)))) - 1
		if i < 0 {
			i = 0
		}
		return ms(s[i])
	}
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	return Dist{N: len(s), Mean: ms(sum / time.Duration(len(s))), P50: pct(50), P95: pct(95), P99: pct(99), Max: ms(s[len(s)-1])}
}
