package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// methodCall is what invoke and state need from the hub (part of hubClient).
type methodCall interface {
	InvokeMethod(ctx context.Context, id string, req iothub.MethodRequest) (iothub.MethodResult, error)
}

// methodRequest builds the call; it turns --timeout and --connect-timeout into Azure's seconds; the global --timeout
// default (30 s) is Azure's default, so it is sent only when given.
func (a *app) methodRequest(cmd *cobra.Command, name string, payload string, connect time.Duration) (iothub.MethodRequest, time.Duration, error) {
	req := iothub.MethodRequest{MethodName: name}
	if payload != "" {
		if !json.Valid([]byte(payload)) {
			return req, 0, usageErrorf("--payload %q is not JSON (e.g. '{\"target\":\"relay1\"}')", payload)
		}
		req.Payload = json.RawMessage(payload)
	}
	if cmd.Flags().Changed("timeout") {
		s := int(a.timeout.Round(time.Second) / time.Second)
		req.ResponseTimeoutInSeconds = &s
	}
	if connect > 0 {
		s := int((connect + time.Second - 1) / time.Second)
		req.ConnectTimeoutInSeconds = &s
	}
	resp, conn, err := req.Timeouts()
	if err != nil {
		return req, 0, usageErrorf("%v (--timeout is how long the device has to answer: 5s–5m; --connect-timeout at most 5m)", err)
	}
	return req, resp + conn + 10*time.Second, nil
}

// methodError classifies the errors a method call adds to the usual ones.
func methodError(err error, id, method string) error {
	var he *iothub.Error
	if !errors.As(err, &he) {
		return err
	}
	switch {
	case he.Code == iothub.CodeDeviceNotOnline && he.CodeName() == iothub.NameDeviceNotOnline:
		return &cliError{exit: ExitOffline, code: iothub.NameDeviceNotOnline, err: err,
			msg: fmt.Sprintf("device %q is not connected: %s; methods reach only connected boards (see `c2d device show %s`, or wait with --connect-timeout)", id, he.Detail, id)}
	case he.Code == iothub.CodeGatewayTimeout:
		return &cliError{exit: ExitTimeout, code: "GatewayTimeout", err: err,
			msg: fmt.Sprintf("device %q did not answer method %q in time: %s; a long action needs a longer --timeout (it may still be running)", id, method, he.Detail)}
	}
	return err
}

func (a *app) invokeCommand() *cobra.Command {
	var payload string
	var connect time.Duration
	cmd := &cobra.Command{
		Use:   "invoke ID METHOD",
		Short: "Call a direct method on a connected board and print its answer",
		Long: `Call a direct method (Azure's synchronous request/response) on a connected device and print the
status and payload it answers with. Methods are never queued: an offline device fails at once
unless --connect-timeout waits for it. The c2d agent answers "state" (its outputs, inputs and last
commands), every action (on, off, toggle, pulse, blink; the target and options in --payload) and
every command named in its config, with status 200 when done, or 400 (refused, with the same reason
a message would get), 404 (no such method), 409 (an output it needs is busy) or 500 (hardware
error).

--timeout is how long the device has to answer (5s–5m, default 30s).

Exit codes: 0 the device answered 2xx; 12 it answered another status; 11 not connected; 7 no
answer in time; and the usual ones (c2d --help).

Needs a policy with ServiceConnect (service or iothubowner).`,
		Example: `  c2d invoke pi-1 state
  c2d invoke pi-1 pulse --payload '{"target":"relay1","duration":"2s"}'
  c2d invoke pi-1 identify --connect-timeout 1m
  c2d invoke pi-1 state -o json | jq .payload.outputs`,
		Args:              exactArgs("ID", "METHOD"),
		ValidArgsFunction: a.completeDevices,
		RunE: func(cmd *cobra.Command, args []string) error {
			id, method := args[0], args[1]
			if err := deviceArg(id); err != nil {
				return err
			}
			req, limit, err := a.methodRequest(cmd, method, payload, connect)
			if err != nil {
				return err
			}
			a.about(id, "", needServiceConnect)
			c, err := a.client()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), limit)
			defer cancel()
			res, err := c.InvokeMethod(ctx, id, req)
			if err != nil {
				return methodError(err, id, method)
			}
			if a.json() {
				if err := writeJSON(cmd.OutOrStdout(), res); err != nil {
					return err
				}
			} else if err := printMethodResult(cmd.OutOrStdout(), res); err != nil {
				return err
			}
			if res.Status < 200 || res.Status > 299 {
				return &outcomeError{exit: ExitDeviceError, code: "Status" + strconv.Itoa(res.Status)}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&payload, "payload", "", "JSON payload of the call, e.g. '{\"target\":\"relay1\"}'")
	cmd.Flags().DurationVar(&connect, "connect-timeout", 0, "wait up to this long for the device to connect (default: it must be connected now)")
	return cmd
}

func printMethodResult(w io.Writer, res iothub.MethodResult) error {
	var out iothub.MethodOutcome
	if json.Unmarshal(res.Payload, &out) == nil && out.Outcome != "" {
		kv := []string{"Status", strconv.Itoa(res.Status), "Outcome", out.Outcome}
		if out.Plan != "" {
			kv = append(kv, "Plan", out.Plan)
		}
		if out.Reason != "" {
			kv = append(kv, "Reason", out.Reason)
		}
		if out.TookMs > 0 {
			kv = append(kv, "Took", (time.Duration(out.TookMs) * time.Millisecond).String())
		}
		return fields(w, kv...)
	}
	if _, err := fmt.Fprintf(w, "Status: %d\n", res.Status); err != nil {
		return err
	}
	var v any
	if json.Unmarshal(res.Payload, &v) == nil {
		return writeJSON(w, v)
	}
	_, err := fmt.Fprintf(w, "%s\n", res.Payload)
	return err
}

// stateView is `c2d state -o json`: the board's own answer plus the registry's connection view.
type stateView struct {
	DeviceID        string             `json:"deviceId"`
	Online          bool               `json:"online"`
	ConnectionState string             `json:"connectionState,omitempty"`
	LastActivity    *time.Time         `json:"lastActivityTime,omitempty"`
	Board           *iothub.BoardState `json:"board,omitempty"` // absent when the board is offline
	Error           string             `json:"error,omitempty"`
}

func (a *app) stateCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "state ID",
		Short: "The technician's view of a board: outputs, inputs, connection and last commands",
		Long: `Ask a connected board for its state with the agent's built-in "state" method and show its
outputs (on/off, since when, busy), inputs, agent version and uptime and its last commands with
their outcomes. An offline board shows what the hub knows (connection state, last activity) and
exits 11.

Needs ServiceConnect for the method (and RegistryRead for the connection view): iothubowner has both.`,
		Example: `  c2d state pi-1
  c2d state pi-1 -o json | jq .board.outputs.relay1.state`,
		Args:              exactArgs("ID"),
		ValidArgsFunction: a.completeDevices,
		RunE: a.deviceRunE(needServiceConnect, func(cmd *cobra.Command, ctx context.Context, c hubClient, id string) error {
			v := stateView{DeviceID: id}
			quick := 10 // seconds: the agent answers state from memory
			res, err := c.InvokeMethod(ctx, id, iothub.MethodRequest{MethodName: "state", ResponseTimeoutInSeconds: &quick})
			if err == nil {
				if res.Status != 200 {
					return &cliError{exit: ExitDeviceError, code: "Status" + strconv.Itoa(res.Status),
						msg: fmt.Sprintf("device %q answered the state method with status %d: %s (is it a c2d agent?)", id, res.Status, res.Payload)}
				}
				var st iothub.BoardState
				if jerr := json.Unmarshal(res.Payload, &st); jerr != nil {
					return &cliError{exit: ExitDeviceError, code: "BadState", err: jerr,
						msg: fmt.Sprintf("device %q answered the state method with something that is not a c2d board state: %v", id, jerr)}
				}
				v.Online, v.Board, v.ConnectionState = true, &st, "Connected"
			}
			offline := methodError(err, id, "state")
			var ce *cliError
			if err != nil && !(errors.As(offline, &ce) && ce.exit == ExitOffline) {
				return offline
			}
			if d, derr := c.GetDevice(ctx, id); derr == nil {
				v.ConnectionState = d.ConnectionState
				if !d.LastActivityTime.IsZero() {
					t := d.LastActivityTime
					v.LastActivity = &t
				}
			} else if err != nil {
				return derr // offline and the registry cannot say more: e.g. no such device
			}
			if err != nil {
				v.Error = ce.msg
			}
			if a.json() {
				if werr := writeJSON(cmd.OutOrStdout(), v); werr != nil {
					return werr
				}
			} else if werr := printState(cmd.OutOrStdout(), v); werr != nil {
				return werr
			}
			if err != nil {
				return &outcomeError{exit: ExitOffline, code: iothub.NameDeviceNotOnline}
			}
			return nil
		}),
	}
	return cmd
}

func printState(w io.Writer, v stateView) error {
	if v.Board == nil {
		last := "never"
		if v.LastActivity != nil {
			last = when(*v.LastActivity)
		}
		_, err := fmt.Fprintf(w, "%s is offline (connection %s, last activity %s): a board answers only while connected.\n",
			v.DeviceID, orDash(v.ConnectionState), last)
		return err
	}
	b := v.Board
	cfg := b.ConfigHash
	if cfg == "" {
		cfg = "-"
	}
	if err := fields(w,
		"Device", b.DeviceID+" (connected)",
		"Agent", fmt.Sprintf("%s, %s backend, config %s", b.Version, b.Backend, cfg),
		"Up", (time.Duration(b.UptimeSeconds*float64(time.Second))).Round(time.Second).String()+" (since "+when(b.Started)+")",
		"Commands", fmt.Sprintf("%d carried out, %d refused", b.Completed, b.Rejected),
		"Last error", b.LastError,
	); err != nil {
		return err
	}
	fmt.Fprintln(w, "\nOutputs:")
	t := newTable(w, "  NAME", "STATE", "SINCE", "BUSY")
	for _, n := range sortedKeys(b.Outputs) {
		o := b.Outputs[n]
		busy := "no"
		if o.Busy {
			busy = "yes"
		}
		t.row("  "+n, o.State, when(o.Since), busy)
	}
	if err := t.flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "\nInputs:")
	if len(b.Inputs) == 0 {
		fmt.Fprintln(w, "  none configured")
	} else {
		t = newTable(w, "  NAME", "STATE", "SINCE")
		for _, n := range sortedKeys(b.Inputs) {
			in := b.Inputs[n]
			t.row("  "+n, in.State, when(in.Since))
		}
		if err := t.flush(); err != nil {
			return err
		}
	}
	fmt.Fprintln(w, "\nLast commands (newest last):")
	if len(b.LastCommands) == 0 {
		_, err := fmt.Fprintln(w, "  none since the agent started")
		return err
	}
	t = newTable(w, "  AT", "VIA", "ID", "WHAT", "OUTCOME", "REASON")
	for _, c := range b.LastCommands {
		t.row("  "+when(c.At), c.Via, c.ID, c.What, c.Outcome, c.Reason)
	}
	return t.flush()
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
