package cli

import (
	"context"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/c2d-project/c2d/cloud/iothub"
)

const eventsLong = `Show device-to-cloud events: what devices publish to devices/{id}/messages/events/, with
Azure's system properties ($.mid, $.cid, $.ct, $.ce), the application properties and the body.
The agent's reject reports (sent when it runs against a plain Azure IoT Hub's dialect) are events
with the properties c2d-report=reject and c2d-original-mid.

The hub keeps the newest events in memory (1000 events, 4 MiB of bodies; a body is cut at 16 KiB)
for watching, as az iot hub monitor-events does; it is not a telemetry store: a restart empties it,
and reading consumes nothing, so any number of operators can watch.

Without --follow, c2d prints the events the hub holds now (or waits up to --wait for one) and exits.
With --follow (-f) it prints events as they arrive until Ctrl-C (exit 0), across hub restarts; in
JSON mode one event per line.

Needs a policy with ServiceConnect (service or iothubowner).`

func (a *app) eventsCommand() *cobra.Command {
	var (
		follow bool
		device string
		wait   time.Duration
	)
	cmd := &cobra.Command{
		Use:   "events [--follow] [--device ID] [--wait D]",
		Short: "Show device-to-cloud events (telemetry, the agent's reject reports)",
		Long:  eventsLong,
		Example: `  c2d events --follow
  c2d events --device pump-7 --wait 30s
  c2d events -f -o json | jq -c 'select(.properties[]? | .name=="c2d-report")'`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			if device != "" {
				if err := deviceArg(device); err != nil {
					return err
				}
			}
			if wait < 0 || wait > time.Minute {
				return usageErrorf("--wait %s: want 0 to 1m", wait)
			}
			a.about(device, "", needServiceConnect)
			c, err := a.client()
			if err != nil {
				return err
			}
			if follow {
				return a.followEvents(cmd, c, device)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), wait+a.timeout)
			defer cancel()
			ans, err := c.Events(ctx, 0, device, wait)
			if err != nil {
				return err
			}
			if a.json() {
				return writeJSON(cmd.OutOrStdout(), ans.Events)
			}
			if len(ans.Events) == 0 {
				_, err := fmt.Fprintln(cmd.OutOrStdout(), "No device-to-cloud events held by the hub. Watch for new ones with `c2d events --follow`.")
				return err
			}
			for _, ev := range ans.Events {
				if _, err := fmt.Fprintln(cmd.OutOrStdout(), eventLine(ev)); err != nil {
					return err
				}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&follow, "follow", "f", false, "keep printing events as they arrive (Ctrl-C stops)")
	f.StringVar(&device, "device", "", "only this device's events")
	f.DurationVar(&wait, "wait", 0, "without --follow: wait up to this long (max 1m) for an event")
	_ = cmd.RegisterFlagCompletionFunc("device", a.completeDevices)
	return cmd
}

// followEvents long-polls from now on until interrupted; a hub restart is retried.
func (a *app) followEvents(cmd *cobra.Command, c hubClient, device string) error {
	w := cmd.OutOrStdout()
	after := int64(-1)
	backoff := time.Second
	for {
		ctx, cancel := context.WithTimeout(cmd.Context(), followPoll+a.timeout)
		ans, err := c.Events(ctx, after, device, followPoll)
		cancel()
		if cmd.Context().Err() != nil {
			return nil
		}
		if err != nil {
			if ce := classify(err, a.subj); ce.exit == ExitUnreachable {
				fmt.Fprintf(a.env.Stderr, "c2d: %s; retrying in %s\n", ce.msg, backoff)
				if !sleepCtx(cmd.Context(), backoff) {
					return nil
				}
				backoff = min(2*backoff, 30*time.Second)
				after = -1 // a restarted hub numbers its events afresh
				continue
			}
			return err
		}
		backoff = time.Second
		if len(ans.Events) > 0 && after >= 0 && ans.Events[0].SequenceNumber > after+1 && device == "" {
			fmt.Fprintf(a.env.Stderr, "c2d: %d event(s) were dropped from the hub's window before they could be shown\n", ans.Events[0].SequenceNumber-after-1)
		}
		after = ans.Next
		for _, ev := range ans.Events {
			if a.json() {
				err = writeJSONLine(w, ev)
			} else {
				_, err = fmt.Fprintln(w, eventLine(ev))
			}
			if err != nil {
				return err
			}
		}
	}
}

// eventLine is one event as text: time, device, system and application properties, body.
//
//	2026-12-03 06:55:01  pump-7  $.ct=application/json c2d-report=reject  {"originalMessageId":"…"}
func eventLine(ev iothub.DeviceEvent) string {
	var props []string
	for _, p := range []struct{ k, v string }{{"$.mid", ev.MessageID}, {"$.cid", ev.CorrelationID}, {"$.ct", ev.ContentType}, {"$.ce", ev.ContentEncoding}} {
		if p.v != "" {
			props = append(props, p.k+"="+p.v)
		}
	}
	for _, p := range ev.Properties {
		props = append(props, p.Name+"="+p.Value)
	}
	return strings.Join([]string{when(ev.EnqueuedTimeUTC), ev.DeviceID, strings.Join(props, " "), bodyText(ev)}, "  ")
}

func bodyText(ev iothub.DeviceEvent) string {
	if len(ev.Body) == 0 {
		return "(no body)"
	}
	s := ""
	if utf8.Valid(ev.Body) {
		s = strings.NewReplacer("\n", `\n`, "\r", `\r`, "\t", `\t`).Replace(string(ev.Body)) // one line per event
	} else {
		s = fmt.Sprintf("(%d bytes, not text)", len(ev.Body))
	}
	if ev.Truncated {
		s += fmt.Sprintf(" … (%d bytes in all)", ev.BodySize)
	}
	return s
}
