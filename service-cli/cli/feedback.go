package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// followPoll is how long one feedback receive waits in --follow mode (the hub caps it at 60 s).
const followPoll = 30 * time.Second

const feedbackLong = `Receive delivery feedback records (the outcome of messages sent with --ack other than none),
print them, and complete them so they are not delivered again.

Feedback is one hub-wide queue, as in Azure IoT Hub: records arrive in batches, and completing a
batch removes it for every reader. A batch is completed only after its records were printed, so an
interrupted c2d never loses one (it may print it again next time).

Without --follow, c2d drains what is waiting now (or waits up to --wait for the first batch) and
exits. With --follow it keeps receiving until Ctrl-C (exit 0); in JSON mode it prints one record per
line.

--device ID shows only that device's records:
  without --follow, batches that hold only that device's records are completed; batches that also
    hold other devices' records are printed filtered and then abandoned (returned intact to the
    queue for other readers) when c2d exits, so nothing of theirs is lost;
  with --follow, every batch is completed as it arrives (abandoning would hand the same batch back
    at once), so other devices' records are consumed without being shown; c2d says so on stderr.
To watch one message without consuming anything, use c2d send --wait or c2d queue show.

Needs a policy with ServiceConnect (service or iothubowner).`

func (a *app) feedbackCommand() *cobra.Command {
	var (
		follow bool
		device string
		wait   time.Duration
	)
	cmd := &cobra.Command{
		Use:   "feedback",
		Short: "Receive, print and complete delivery feedback records",
		Long:  feedbackLong,
		Example: `  c2d feedback
  c2d feedback --wait 20s --device pump-7
  c2d feedback --follow -o json | jq -c 'select(.statusCode!="Success")'`,
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
				return a.followFeedback(cmd, c, device)
			}
			return a.drainFeedback(cmd, c, device, wait)
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep receiving until interrupted")
	cmd.Flags().StringVar(&device, "device", "", "show only this device's records (see above for what happens to others)")
	cmd.Flags().DurationVar(&wait, "wait", 0, "without --follow: wait up to this long (max 1m) for the first batch")
	_ = cmd.RegisterFlagCompletionFunc("device", a.completeDevices)
	return cmd
}

func matches(r iothub.FeedbackRecord, device string) bool {
	return device == "" || r.DeviceID == device
}

// drainFeedback receives every batch waiting now, prints the records, then settles the batches.
func (a *app) drainFeedback(cmd *cobra.Command, c hubClient, device string, wait time.Duration) error {
	var shown []iothub.FeedbackRecord
	var complete, abandon []string
	// Settle what was received even when a later receive fails: completed after printing,
	// abandoned (returned) otherwise.
	settle := func(printed bool) error {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(cmd.Context()), a.timeout)
		defer cancel()
		var first error
		if printed {
			for _, lt := range complete {
				if err := c.CompleteFeedback(ctx, lt); err != nil && first == nil {
					first = err
				}
			}
		} else {
			abandon = append(abandon, complete...)
		}
		for _, lt := range abandon {
			_ = c.AbandonFeedback(ctx, lt) // if this fails the lock expires and the batch returns anyway
		}
		return first
	}
	for {
		ctx, cancel := context.WithTimeout(cmd.Context(), wait+a.timeout)
		b, err := c.ReceiveFeedback(ctx, wait)
		cancel()
		if err != nil {
			_ = settle(false)
			return err
		}
		if b == nil {
			break
		}
		wait = 0 // only the first receive waits
		mixed := false
		for _, r := range b.Records {
			if matches(r, device) {
				shown = append(shown, r)
			} else {
				mixed = true
			}
		}
		if mixed {
			abandon = append(abandon, b.LockToken)
		} else {
			complete = append(complete, b.LockToken)
		}
	}
	if err := a.printRecords(cmd.OutOrStdout(), shown); err != nil {
		_ = settle(false)
		return err
	}
	if err := settle(true); err != nil {
		return fmt.Errorf("feedback printed, but completing it failed (it will be delivered again): %w", err)
	}
	if len(abandon) > 0 && !a.json() && a.env.StderrIsTerminal {
		fmt.Fprintf(a.env.Stderr, "%d feedback batch(es) also held other devices' records; they were returned to the queue.\n", len(abandon))
	}
	return nil
}

func (a *app) printRecords(w io.Writer, recs []iothub.FeedbackRecord) error {
	if a.json() {
		if recs == nil {
			recs = []iothub.FeedbackRecord{}
		}
		return writeJSON(w, recs)
	}
	if len(recs) == 0 {
		_, err := fmt.Fprintln(w, "No feedback waiting. The hub batches outcomes (feedback.interval, 1s by default) before they can be read: wait for the next batch with `c2d feedback --wait 10s`, or keep reading with `c2d feedback --follow`.")
		return err
	}
	t := newTable(w, feedbackHeader...)
	for _, r := range recs {
		t.row(feedbackRow(r)...)
	}
	return t.flush()
}

var feedbackHeader = []string{"TIME", "DEVICE ID", "MESSAGE ID", "STATUS", "DELIVERIES", "REASON"}

func feedbackRow(r iothub.FeedbackRecord) []string {
	dc := ""
	if r.DeliveryCount > 0 {
		dc = strconv.Itoa(r.DeliveryCount)
	}
	return []string{when(r.EnqueuedTimeUTC), r.DeviceID, r.OriginalMessageID, string(r.StatusCode), dc, r.Reason}
}

// followFeedback receives until interrupted, printing each batch before completing it.
func (a *app) followFeedback(cmd *cobra.Command, c hubClient, device string) error {
	w := cmd.OutOrStdout()
	if device != "" {
		fmt.Fprintf(a.env.Stderr, "note: --follow completes every feedback batch; records of devices other than %s are consumed without being shown\n", device)
	}
	if !a.json() {
		fmt.Fprintf(w, "%-20s  %-16s  %-36s  %-21s  %-10s  %s\n", toAny(feedbackHeader)...)
	}
	backoff := time.Second
	for {
		ctx, cancel := context.WithTimeout(cmd.Context(), followPoll+a.timeout)
		b, err := c.ReceiveFeedback(ctx, followPoll)
		cancel()
		if cmd.Context().Err() != nil {
			return nil // Ctrl-C is how --follow ends
		}
		if err != nil {
			if ce := classify(err, a.subj); ce.exit == ExitUnreachable {
				// Keep following across a hub restart.
				fmt.Fprintf(a.env.Stderr, "c2d: %s; retrying in %s\n", ce.msg, backoff)
				if !sleepCtx(cmd.Context(), backoff) {
					return nil
				}
				backoff = min(2*backoff, 30*time.Second)
				continue
			}
			return err
		}
		backoff = time.Second
		if b == nil {
			continue
		}
		for _, r := range b.Records {
			if !matches(r, device) {
				continue
			}
			if a.json() {
				err = writeJSONLine(w, r)
			} else {
				_, err = fmt.Fprintf(w, "%-20s  %-16s  %-36s  %-21s  %-10s  %s\n", toAny(feedbackRow(r))...)
			}
			if err != nil {
				return err // not completed: the batch comes back to the next reader
			}
		}
		ctx, cancel = context.WithTimeout(context.WithoutCancel(cmd.Context()), a.timeout)
		err = c.CompleteFeedback(ctx, b.LockToken)
		cancel()
		var he *iothub.Error
		if errors.As(err, &he) && he.Code == iothub.CodeDeviceMessageLockLost {
			fmt.Fprintln(a.env.Stderr, "c2d: a feedback batch's lock expired before it was completed; it will be delivered again")
			continue
		}
		if err != nil {
			return err
		}
	}
}

func toAny(s []string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		if v == "" {
			v = "-"
		}
		out[i] = v
	}
	return out
}

// sleepCtx waits d or until ctx ends; it reports whether the full time passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
