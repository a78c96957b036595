package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// maxPoll bounds one status long-poll of send --wait; the hub caps waits at 60 s.
const maxPoll = 20 * time.Second

// sendOutput is send's JSON result. The first fields are the hub's SendResult; with --wait the
// outcome follows, named as in Azure's feedback records (statusCode, description) plus c2d's
// reason and deliveryCount.
type sendOutput struct {
	DeviceID        string               `json:"deviceId"`
	MessageID       string               `json:"messageId"`
	CorrelationID   string               `json:"correlationId,omitempty"`
	SequenceNumber  int64                `json:"sequenceNumber"`
	Ack             iothub.AckMode       `json:"ack"`
	EnqueuedTimeUTC time.Time            `json:"enqueuedTimeUtc"`
	ExpiryTimeUTC   time.Time            `json:"expiryTimeUtc"`
	StatusCode      string               `json:"statusCode,omitempty"`
	Description     string               `json:"description,omitempty"`
	Reason          string               `json:"reason,omitempty"`
	State           string               `json:"state,omitempty"`
	DeliveryCount   *int                 `json:"deliveryCount,omitempty"`
	SettledTimeUTC  *time.Time           `json:"settledTimeUtc,omitempty"`
	TimedOut        bool                 `json:"timedOut,omitempty"`
	Properties      []iothub.AppProperty `json:"properties,omitempty"`
}

const sendLong = `Send a cloud-to-device message to one device and print its message id.

The message carries a body (--data or --data-file) and application properties (--props and
--prop, kept in the order given), which the board's agent maps to actions. The hub queues it
durably; the device settles it (complete, or reject with a reason) when it is connected.

With --wait TIMEOUT, c2d waits for the message's outcome (a spinner shows the elapsed time on a
terminal), prints it with the device's reason, and exits with a code that tells the outcome.
Waiting does not consume delivery feedback, so other operators and services still see it; --wait
sets --ack full unless you give --ack, so feedback readers (c2d feedback) see the outcome too.

Property names and values use Azure's character set: ASCII letters, digits and !#$%&'*+-.^_` + "`" + `|~
(no spaces). Names starting with '$' or 'iothub-' are reserved. A message is at most 64 KB
(body + properties + ids).

Needs a policy with ServiceConnect (service or iothubowner).

Exit codes:
`

func (a *app) sendCommand() *cobra.Command {
	var (
		data, dataFile, mid, cid, uid, ack, expiry, ct, ce string
		props                                              []iothub.AppProperty
		wait                                               time.Duration
	)
	cmd := &cobra.Command{
		Use:   "send ID",
		Short: "Send a message to a device; with --wait, wait for and report its outcome",
		Long:  sendLong + exitCodeTable(),
		Example: `  c2d send pump-7 --props 'target=relay1;action=pulse;duration=2s' --wait 30s
  c2d send pump-7 --prop command=identify --wait 1m
  c2d send pump-7 --prop target=act --prop action=blink --prop count=3 --expiry 10m --ack full
  c2d send pump-7 --data-file job.json --content-type application/json --mid job-42 --cid batch-9
  c2d send pump-7 --prop target=relay1 --prop action=off --expiry "$(date -u -d 'tomorrow 08:00' +%FT%TZ)"
  c2d send pump-7 --prop command=identify --wait 1m -o json | jq -r '.statusCode, .reason'`,
		Args:              exactArgs("ID"),
		ValidArgsFunction: a.completeDevices,
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			if err := deviceArg(id); err != nil {
				return err
			}
			if mid == "" {
				// Chosen here, not by the hub, so the id is known even if the answer is lost.
				mid = uuid.NewString()
			}
			a.about(id, mid, needServiceConnect)
			if cmd.Flags().Changed("data") && cmd.Flags().Changed("data-file") {
				return usageErrorf("--data and --data-file both give the message body: use one of them")
			}
			if wait < 0 {
				return usageErrorf("--wait %s must be positive", wait)
			}
			req := iothub.SendRequest{MessageID: mid, CorrelationID: cid, UserID: uid, ContentType: ct,
				ContentEncoding: ce, Properties: props}
			if ack == "" && wait > 0 {
				req.Ack = iothub.AckFull
			} else if ack != "" {
				m, err := iothub.ParseAckMode(ack)
				if err != nil {
					return usageErrorf("--ack %q: want none, positive, negative or full", ack)
				}
				req.Ack = m
			}
			if expiry != "" {
				t, err := ParseExpiry(expiry, time.Now())
				if err != nil {
					return usageErrorf("%v", err)
				}
				req.ExpiryTimeUTC = &t
			}
			switch {
			case cmd.Flags().Changed("data"):
				req.Body = []byte(data)
			case dataFile != "":
				b, err := readBody(dataFile, a.env.Stdin)
				if err != nil {
					return err
				}
				req.Body = b
			}
			m := iothub.Message{MessageID: req.MessageID, CorrelationID: req.CorrelationID, UserID: req.UserID,
				ContentType: req.ContentType, ContentEncoding: req.ContentEncoding, Ack: req.Ack,
				Properties: req.Properties, Body: req.Body}
			if err := m.Validate(); err != nil {
				return usageErrorf("message not sent: %v", err)
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			ctx, cancel := a.call(cmd)
			res, err := c.Send(ctx, id, req)
			cancel()
			if err != nil {
				return err
			}
			a.warnIfDisabled(cmd.Context(), c, id)
			out := sendOutput{DeviceID: res.DeviceID, MessageID: res.MessageID, CorrelationID: cid,
				SequenceNumber: res.SequenceNumber, Ack: req.Ack, EnqueuedTimeUTC: res.EnqueuedTimeUTC,
				ExpiryTimeUTC: res.ExpiryTimeUTC}
			if out.Ack == "" {
				out.Ack = iothub.AckNone
			}
			if out.DeviceID == "" {
				out.DeviceID = id
			}
			if wait == 0 {
				if a.json() {
					return writeJSON(cmd.OutOrStdout(), out)
				}
				fmt.Fprintln(cmd.OutOrStdout(), res.MessageID)
				if a.env.StderrIsTerminal {
					fmt.Fprintf(a.env.Stderr, "Queued for %s (sequence %d, expires %s). Follow it: c2d queue show %s\n",
						id, res.SequenceNumber, when(res.ExpiryTimeUTC), id)
				}
				return nil
			}
			if !a.json() {
				fmt.Fprintln(cmd.OutOrStdout(), res.MessageID)
			}
			st, final, err := a.waitOutcome(cmd.Context(), c, id, res.MessageID, wait)
			if err != nil {
				return err
			}
			return a.printOutcome(cmd, out, st, final, wait)
		},
	}
	f := cmd.Flags()
	f.StringVar(&data, "data", "", "message body text")
	f.StringVar(&dataFile, "data-file", "", "read the message body from a file ('-' for stdin)")
	f.Var(propList{props: &props, multi: true}, "props", "application properties 'k=v;k2=v2' (Azure CLI style)")
	f.Var(propList{props: &props}, "prop", "one application property k=v (repeatable; order is kept)")
	f.StringVar(&mid, "mid", "", "message id (default: a new UUID)")
	f.StringVar(&cid, "cid", "", "correlation id")
	f.StringVar(&uid, "uid", "", "user id")
	f.StringVar(&ct, "content-type", "", "content type of the body, e.g. application/json")
	f.StringVar(&ce, "content-encoding", "", "content encoding of the body, e.g. utf-8")
	f.StringVar(&ack, "ack", "", "feedback to request: none, positive, negative or full (default none; full with --wait)")
	f.StringVar(&expiry, "expiry", "", "expire after a duration (10m) or at an RFC 3339 time (default: the hub's TTL)")
	f.DurationVar(&wait, "wait", 0, "wait up to this long for the outcome (e.g. 30s) and exit with its code")
	_ = cmd.RegisterFlagCompletionFunc("ack", cobra.FixedCompletions([]string{"none", "positive", "negative", "full"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

func readBody(path string, stdin io.Reader) ([]byte, error) {
	r := stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, usageErrorf("--data-file: %v", err)
		}
		defer f.Close()
		r = f
	}
	// Read one byte past the limit so Validate reports the size without loading a huge file.
	b, err := io.ReadAll(io.LimitReader(r, iothub.MaxMessageSize+1))
	if err != nil {
		return nil, usageErrorf("--data-file %s: %v", path, err)
	}
	if len(b) > iothub.MaxMessageSize {
		size := fmt.Sprintf("more than %d bytes", iothub.MaxMessageSize)
		if fi, err := os.Stat(path); path != "-" && err == nil && fi.Mode().IsRegular() {
			size = fmt.Sprintf("%d bytes", fi.Size())
		}
		return nil, usageErrorf("message not sent: --data-file %s is %s; a message is at most %d bytes (64 KiB: body + properties + ids): send a smaller body or a reference to the data", path, size, iothub.MaxMessageSize)
	}
	return b, nil
}

// warnIfDisabled tells the operator on stderr that a message was queued for a disabled device: the
// hub accepts it (as Azure does) but it waits, and may expire, until the device is enabled. The
// check needs RegistryRead; a policy without it (service) just gets no warning.
func (a *app) warnIfDisabled(ctx context.Context, c hubClient, id string) {
	if a.json() {
		return // stderr carries only error objects in JSON mode
	}
	ctx, cancel := context.WithTimeout(ctx, min(a.timeout, 5*time.Second))
	defer cancel()
	d, err := c.GetDevice(ctx, id)
	if err == nil && d.Status == iothub.DeviceDisabled {
		fmt.Fprintf(a.env.Stderr, "c2d: warning: device %s is disabled: the message is queued but is not delivered (and may expire) until `c2d device enable %s`\n", id, id)
	}
}

// waitOutcome long-polls the message's status until it is terminal or wait elapses. It reads the
// status (GET .../devicebound/{mid}?wait=) instead of feedback, so it consumes nothing. A hub that
// cannot be reached is retried until the deadline (a hub restart does not end the wait).
func (a *app) waitOutcome(ctx context.Context, c hubClient, id, mid string, wait time.Duration) (iothub.MessageStatus, bool, error) {
	sp := startSpinner(a.env.Stderr, a.env.StderrIsTerminal, fmt.Sprintf("waiting for %s to settle message %s", id, mid))
	defer sp.end()
	deadline := time.Now().Add(wait)
	var last iothub.MessageStatus
	var unreachable *cliError // the hub could not be asked since the last answer
	for {
		remaining := time.Until(deadline)
		if remaining <= 0 {
			if unreachable != nil {
				// Not a timeout: nobody could tell whether the message was settled.
				unreachable.msg = fmt.Sprintf("lost the hub while waiting for message %s, so its outcome is unknown: %s; check later with `c2d queue show %s`", mid, unreachable.msg, id)
				return last, false, unreachable
			}
			return last, false, nil
		}
		poll := min(remaining, maxPoll)
		pctx, cancel := context.WithTimeout(ctx, poll+a.timeout)
		st, err := c.MessageStatus(pctx, id, mid, poll)
		cancel()
		if ctx.Err() != nil {
			return last, false, &cliError{exit: ExitInterrupted, code: "Interrupted", err: ctx.Err(),
				msg: fmt.Sprintf("interrupted while waiting for message %s; it stays queued for %s (see `c2d queue show %s`)", mid, id, id)}
		}
		if err != nil {
			if ce := classify(err, a.subj); ce.exit == ExitUnreachable {
				unreachable = ce
				sp.set(fmt.Sprintf("hub unreachable, retrying: waiting for %s to settle message %s", id, mid))
				sleepCtx(ctx, min(time.Second, max(time.Until(deadline), 0)))
				continue
			}
			return last, false, err
		}
		last, unreachable = st, nil
		if st.Outcome != "" {
			return st, true, nil
		}
		sp.set(fmt.Sprintf("waiting for %s to settle message %s: %s, %d deliveries", id, mid, st.State, st.DeliveryCount))
	}
}

func (a *app) printOutcome(cmd *cobra.Command, out sendOutput, st iothub.MessageStatus, final bool, wait time.Duration) error {
	id, mid := out.DeviceID, out.MessageID
	if st.MessageID != "" {
		out.State = string(st.State)
		dc := st.DeliveryCount
		out.DeliveryCount = &dc
		out.SettledTimeUTC = st.SettledTimeUTC
	}
	exit, code := ExitTimeout, "Timeout"
	var text string
	if final {
		out.StatusCode = string(st.Outcome)
		out.Description = iothub.FeedbackDescription(st.Outcome)
		out.Reason = st.Reason
		exit, code = OutcomeExitCode(st.Outcome), string(st.Outcome)
		switch st.Outcome {
		case iothub.StatusSuccess:
			text = fmt.Sprintf("Success: %s completed message %s (%s).", id, mid, deliveries(st.DeliveryCount))
		case iothub.StatusRejected:
			reason := st.Reason
			if reason == "" {
				reason = "(the device gave no reason)"
			}
			text = fmt.Sprintf("Rejected: %s rejected message %s: %s", id, mid, reason)
		case iothub.StatusExpired:
			text = fmt.Sprintf("Expired: message %s expired at %s before %s settled it (%s). Is the device connected? c2d device show %s",
				mid, when(st.ExpiryTimeUTC), id, deliveries(st.DeliveryCount), id)
		case iothub.StatusDeliveryCountExceeded:
			text = fmt.Sprintf("DeliveryCountExceeded: message %s was delivered to %s %s and never settled, so the hub gave up. Check the board's agent log: journalctl -u c2d-agent",
				mid, id, times(st.DeliveryCount))
		case iothub.StatusPurged:
			text = fmt.Sprintf("Purged: message %s was purged from %s's queue before it was settled.", mid, id)
		default:
			text = fmt.Sprintf("%s: message %s on %s.", st.Outcome, mid, id)
		}
	} else {
		out.TimedOut = true
		state := "queued"
		if st.State != "" {
			state = fmt.Sprintf("%s, %s", st.State, deliveries(st.DeliveryCount))
		}
		text = fmt.Sprintf("Timeout: no outcome for message %s within %s; it is still queued for %s (%s). Check later: c2d queue show %s",
			mid, wait, id, state, id)
	}
	var err error
	if a.json() {
		err = writeJSON(cmd.OutOrStdout(), out)
	} else {
		_, err = fmt.Fprintln(cmd.OutOrStdout(), text)
	}
	if err != nil {
		return err
	}
	if exit == ExitOK {
		return nil
	}
	return &outcomeError{exit: exit, code: code}
}

func deliveries(n int) string {
	if n == 1 {
		return "1 delivery"
	}
	return fmt.Sprintf("%d deliveries", n)
}

func times(n int) string {
	if n == 1 {
		return "once"
	}
	return fmt.Sprintf("%d times", n)
}
