package bench

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
)

// PrintTable writes the report as aligned text tables.
func (rep *Report) PrintTable(w io.Writer) {
	m := rep.Machine
	fmt.Fprintf(w, "c2d-bench %s (took %s)\n", rep.Started.Format("2006-01-02 15:04 MST"), rep.Took)
	fmt.Fprintf(w, "machine: %d × %s, %s RAM, Linux %s, %s %s\ndisk: %s\n\n", m.NProc, m.CPU, m.MemTotal, m.Kernel, m.Go, m.GOOSARCH, m.Disk)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	if rep.Fsync != nil {
		fmt.Fprintf(tw, "fsync (4 KiB append + fsync, data dir's disk)\tp50 %.3f ms\tp99 %.3f ms\t\n\n", rep.Fsync.P50, rep.Fsync.P99)
	}
	if len(rep.Latency) > 0 {
		fmt.Fprintln(tw, "LATENCY (ms)\tdevices\tpar\tp50\tp95\tp99\tmax\tsend 201 p50\tsettledTimeUtc p50\tdurable p50\t")
		for _, l := range rep.Latency {
			p50 := func(d *Dist) string {
				if d == nil {
					return "-"
				}
				return fmt.Sprintf("%.2f", d.P50)
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%.2f\t%.2f\t%.2f\t%.2f\t%s\t%s\t%s\t\n", l.Name, l.Devices, l.Parallel,
				l.Feedback.P50, l.Feedback.P95, l.Feedback.P99, l.Feedback.Max, p50(l.Send), p50(l.SettledTimeUTC), p50(l.Durable))
		}
		fmt.Fprintln(tw)
		rep.printPath(tw)
		rep.printStages(tw)
	}
	rep.printMethods(tw)
	if len(rep.Throughput) > 0 {
		fmt.Fprintln(tw, "THROUGHPUT\tdevices\tmessages\tsenders\tper second\tsends/s\t")
		for _, t := range rep.Throughput {
			ss := "-"
			if t.SendsSec > 0 {
				ss = fmt.Sprintf("%.0f", t.SendsSec)
			}
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%.0f\t%s\t\n", t.Name, t.Devices, t.Messages, t.Senders, t.PerSec, ss)
		}
		fmt.Fprintf(tw, "Azure IoT Hub S1 (reference, per unit)\t-\t-\t-\t%.2f\t-\t\n\n", rep.AzureS1SendsPerSec)
	}
	rep.printCluster(tw)
	if len(rep.Fleet) > 0 {
		fmt.Fprintln(tw, "FLEET (idle connected devices)\tdevices\tRSS before\tRSS after\tper device\tconnects/s\t")
		for _, f := range rep.Fleet {
			cps := "-" // a row measured after an idle hold connected nobody
			if f.ConnectPerSec > 0 {
				cps = fmt.Sprintf("%.0f", f.ConnectPerSec)
			}
			fmt.Fprintf(tw, "%s\t%d\t%.1f MiB\t%.1f MiB\t%.1f KiB\t%s\t\n", f.Name, f.Devices, mib(f.RSSBefore), mib(f.RSSAfter), f.PerDevice/1024, cps)
		}
		if rep.HubShutdownMS > 0 {
			fmt.Fprintf(tw, "c2d-hub graceful shutdown (SIGTERM → exit) with the largest fleet connected\t%.0f ms\t\n", rep.HubShutdownMS)
		}
		fmt.Fprintln(tw)
	}
	if a := rep.Agent; a != nil {
		fmt.Fprintln(tw, "AGENT (c2d-agent, sim hardware)\t\t")
		strip := "not stripped"
		if a.Stripped {
			strip = "stripped"
		}
		fmt.Fprintf(tw, "binary (host)\t%.1f MiB (%s, %s)\t\n", mib(a.BinaryBytes), strip, a.Binary)
		var names []string
		for k := range a.Dist {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			fmt.Fprintf(tw, "binary %s\t%.1f MiB\t\n", k, mib(a.Dist[k]))
		}
		fmt.Fprintf(tw, "start → READY=1\t%.1f ms\t\n", a.ReadyMS)
		fmt.Fprintf(tw, "RSS idle\t%.1f MiB\t\n", mib(a.RSSIdle))
		fmt.Fprintf(tw, "RSS after load (peak)\t%.1f MiB (%.1f MiB)\t\n", mib(a.RSSLoad), mib(a.HWMLoad))
		fmt.Fprintf(tw, "CPU idle\t%.3f %% of one core over %.0f s\t\n\n", a.IdleCPUPct, a.IdleWindowSec)
	}
	if len(rep.Ratios) > 0 {
		fmt.Fprintln(tw, "RATIOS\t\t")
		var keys []string
		for k := range rep.Ratios {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(tw, "%s\t%.2f×\t\n", k, rep.Ratios[k])
		}
	}
	tw.Flush()
	if len(rep.Notes) > 0 {
		fmt.Fprintf(w, "\nnotes:\n  %s\n", strings.Join(rep.Notes, "\n  "))
	}
}

// printPath writes where each tapped row's durable time went, and what the tap itself costs.
func (rep *Report) printPath(tw io.Writer) {
	var raw, tapped float64
	header := false
	for _, l := range rep.Latency {
		switch {
		case l.Name == "raw-mochi":
			raw = l.Feedback.P50
		case l.Name == "raw-mochi-tapped":
			tapped = l.Feedback.P50
		case l.Path != nil && l.Durable != nil:
			if !header {
				fmt.Fprintln(tw, "DURABLE PATH (p50 ms, at the tap)\tsend → delivery\tdelivery → disposition\tdisposition → PUBACK (durable)\tsend → durable\t")
				header = true
			}
			fmt.Fprintf(tw, "%s\t%.2f\t%.2f\t%.2f\t%.2f\t\n", l.Name, l.Path.ToDevice.P50, l.Path.InDevice.P50, l.Path.ToDurable.P50, l.Durable.P50)
		}
	}
	if !header {
		return
	}
	if raw > 0 && tapped > 0 {
		fmt.Fprintf(tw, "the tap's own cost (raw-mochi-tapped − raw-mochi, p50)\t%.3f\t\t\t\t\n", tapped-raw)
	}
	fmt.Fprintln(tw)
}
