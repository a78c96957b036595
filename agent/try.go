package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/c2d-project/c2d/agent/action"
	"github.com/c2d-project/c2d/agent/config"
	"github.com/c2d-project/c2d/agent/dispatch"
	"github.com/c2d-project/c2d/cloud/iothub"
)

// ErrWouldReject is returned by Try when the agent would reject the property set.
var ErrWouldReject = errors.New("the agent would reject this message")

// ParseTryProperties reads `c2d-agent try`'s argument: name=value pairs separated by ';' or
// spaces ('target=relay1;action=pulse;duration=2s' or 'target=relay1 action=pulse duration=2s'),
// each split at its first '='. Azure's property character set has no spaces, so both separators
// are unambiguous.
func ParseTryProperties(s string) ([]iothub.AppProperty, error) {
	var props []iothub.AppProperty
	for _, pair := range strings.FieldsFunc(s, func(r rune) bool { return r == ';' || r == ' ' || r == '\t' }) {
		k, v, ok := strings.Cut(pair, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("property %q: want name=value, e.g. target=relay1", pair)
		}
		props = append(props, iothub.AppProperty{Name: k, Value: v})
	}
	if len(props) == 0 {
		return nil, errors.New("no properties: give them like 'target=relay1;action=pulse;duration=2s'")
	}
	return props, nil
}

// Try is `c2d-agent try`: decode a property set with the board's config exactly as a message from
// the hub would be, print what the agent would do or the reject reason the operator would get, and
// with hardware perform it on the outputs (refused while the agent runs). No hub is involved.
func Try(ctx context.Context, w io.Writer, cfg *config.Config, props []iothub.AppProperty, hardware bool, log *slog.Logger) error {
	m := &iothub.Message{MessageID: "try", Properties: props}
	plan, err := cfg.Catalog().Decode(m, time.Now())
	if err != nil {
		var rej *action.Rejection
		if errors.As(err, &rej) {
			fmt.Fprintf(w, "Rejected: %s\n", rej.Reason)
			return fmt.Errorf("%w (the reason above is what the operator would see)", ErrWouldReject)
		}
		return err
	}
	if !hardware {
		fmt.Fprintf(w, "Accepted: %s (complete on %s)\n", plan, plan.CompleteOn)
		fmt.Fprintln(w, "Nothing moved; add --hardware to perform it (stop the agent first).")
		return nil
	}
	res, err := cfg.Resolve()
	if err != nil {
		return err
	}
	unlock, err := lockForHardware(res.StateDir)
	if err != nil {
		return err
	}
	defer unlock()
	board, err := OpenBoard(cfg, log)
	if err != nil {
		return fmt.Errorf("open hardware (%s): %w", cfg.Hardware.Backend, err)
	}
	safe := map[string]bool{}
	for _, s := range cfg.Specs() {
		safe[s.Name] = s.Safe
	}
	d := dispatch.New(board, safe, log)
	done := make(chan dispatch.Result, 1)
	fmt.Fprintf(w, "Running: %s\n", plan)
	d.Submit(&dispatch.Job{Plan: plan, Done: func(r dispatch.Result) { done <- r }})
	var r dispatch.Result
	select {
	case r = <-done:
	case <-ctx.Done():
		d.Shutdown() // cuts the action short: its outputs go to their safe state
		r = <-done
	}
	d.Shutdown()
	cerr := board.Close()
	if r.Err != nil {
		msg := fmt.Sprintf("%s: %v", plan, r.Err)
		if len(r.Safed) > 0 {
			msg += "; returned to safe state: " + strings.Join(r.Safed, ", ")
		}
		return errors.New(msg)
	}
	fmt.Fprintf(w, "Done in %s; every output is back in its safe state.\n", r.Elapsed.Round(time.Millisecond))
	if cerr != nil {
		return fmt.Errorf("close hardware: %w", cerr)
	}
	return nil
}
