package agent

import (
	"fmt"
	"io"
	"strings"

	"github.com/c2d-project/c2d/agent/action"
	"github.com/c2d-project/c2d/agent/config"
)

// Describe prints the resolved config: where the agent connects and what the cloud may do, the way
// check-config shows it to the person writing the config.
func Describe(w io.Writer, cfg *config.Config, res *config.Resolved) {
	fmt.Fprintf(w, "device:        %s (hub %s)\n", res.Device.DeviceID, res.Device.HostName)
	fmt.Fprintf(w, "broker:        %s\n", res.BrokerURL.Redacted())
	for _, u := range res.Fallbacks {
		fmt.Fprintf(w, "  then:        %s\n", u.Redacted())
	}
	mode := "plain Azure (PUBACK completes; refusals reported as D2C events)"
	if res.Extension {
		mode = "c2d extension opted in (explicit complete/reject/abandon when the hub offers it)"
	}
	fmt.Fprintf(w, "dispositions:  %s\n", mode)
	fmt.Fprintf(w, "hardware:      %s\n", cfg.Hardware.Backend)
	fmt.Fprintf(w, "state_dir:     %s (remembers %d executed ids)\n", res.StateDir, cfg.ExecutedIDs)
	fmt.Fprintln(w, "outputs:")
	cat := cfg.Catalog()
	for i, spec := range cfg.Specs() {
		r := cat.Outputs[i]
		acts := make([]string, len(r.Actions))
		for j, k := range r.Actions {
			acts[j] = string(k)
		}
		safe := "off"
		if spec.Safe {
			safe = "on"
		}
		low := ""
		if spec.ActiveLow {
			low = ", active-low"
		}
		fmt.Fprintf(w, "  %-12s %s%s, safe %s; actions %s; max_duration %s, max_count %d, min_interval %s; complete on %s\n",
			spec.Name, strings.TrimPrefix(spec.String(), spec.Name+" "), low, safe, strings.Join(acts, ","),
			action.FormatDuration(r.MaxDuration), r.MaxCount, action.FormatDuration(r.MinInterval), r.CompleteOn)
	}
	if len(cat.Commands) > 0 {
		fmt.Fprintln(w, "commands:")
	}
	for _, c := range cat.Commands {
		steps := make([]string, len(c.Steps))
		for i, s := range c.Steps {
			steps[i] = s.String()
		}
		fmt.Fprintf(w, "  %-12s %s (complete on %s)\n", c.Name, strings.Join(steps, "; "), c.CompleteOn)
	}
	if specs := cfg.InputSpecs(); len(specs) > 0 {
		fmt.Fprintln(w, "inputs:")
		for _, in := range specs {
			low := ""
			if in.ActiveLow {
				low = ", active-low"
			}
			fmt.Fprintf(w, "  %-12s %s%s, pull %s; edge %s; debounce %s\n",
				in.Name, strings.TrimPrefix(in.String(), in.Name+" "), low, in.Pull, in.Edge, config.ZeroDurationString(in.Debounce))
		}
	}
	for _, warn := range res.Warnings {
		fmt.Fprintf(w, "warning: %s\n", warn)
	}
}
