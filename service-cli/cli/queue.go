package cli

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/c2d-project/c2d/cloud/iothub"
)

func (a *app) queueCommand() *cobra.Command {
	cmd := group(&cobra.Command{
		Use:   "queue",
		Short: "Show or purge a device's pending messages",
		Long: `Inspect and empty a device's cloud-to-device queue (at most 50 pending messages per device, as
in Azure IoT Hub).`,
	})
	cmd.AddCommand(a.queueShow(), a.queuePurge())
	return cmd
}

func (a *app) queueShow() *cobra.Command {
	return &cobra.Command{
		Use:   "show ID",
		Short: "List a device's pending messages with state, delivery count and expiry",
		Long: `List the messages waiting for a device, oldest first: Enqueued (waiting for delivery) or Invisible
(delivered, waiting for the device to settle it until the lock expires).

Needs a policy with ServiceConnect (service or iothubowner).`,
		Example: `  c2d queue show pump-7
  c2d queue show pump-7 -o json | jq length`,
		Args:              exactArgs("ID"),
		ValidArgsFunction: a.completeDevices,
		RunE: a.deviceRunE(needServiceConnect, func(cmd *cobra.Command, ctx context.Context, c hubClient, id string) error {
			q, err := c.Queue(ctx, id)
			if err != nil {
				return err
			}
			if a.json() {
				if q == nil {
					q = []iothub.MessageStatus{}
				}
				return writeJSON(cmd.OutOrStdout(), q)
			}
			if len(q) == 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "No pending messages for %s.\n", id)
				return nil
			}
			t := newTable(cmd.OutOrStdout(), "SEQ", "MESSAGE ID", "STATE", "DELIVERIES", "ACK", "ENQUEUED", "EXPIRES", "LOCKED UNTIL", "PROPERTIES")
			for _, m := range q {
				t.row(strconv.FormatInt(m.SequenceNumber, 10), m.MessageID, string(m.State), strconv.Itoa(m.DeliveryCount),
					string(m.Ack), when(m.EnqueuedTimeUTC), when(m.ExpiryTimeUTC), whenPtr(m.LockedUntilUTC), propsText(m.Properties))
			}
			return t.flush()
		}),
	}
}

func propsText(ps []iothub.AppProperty) string {
	parts := make([]string, len(ps))
	for i, p := range ps {
		parts[i] = p.Name + "=" + p.Value
	}
	return strings.Join(parts, ";")
}

func (a *app) queuePurge() *cobra.Command {
	return &cobra.Command{
		Use:   "purge ID",
		Short: "Remove every pending message of a device",
		Long: `Remove every message waiting for a device, including ones delivered but not yet settled. Senders
that asked for negative or full feedback get a Purged record; c2d send --wait exits 6 (Purged).

Needs a policy with ServiceConnect (service or iothubowner).`,
		Example:           `  c2d queue purge pump-7`,
		Args:              exactArgs("ID"),
		ValidArgsFunction: a.completeDevices,
		RunE: a.deviceRunE(needServiceConnect, func(cmd *cobra.Command, ctx context.Context, c hubClient, id string) error {
			r, err := c.Purge(ctx, id)
			if err != nil {
				return err
			}
			if r.DeviceID == "" {
				r.DeviceID = id
			}
			if a.json() {
				return writeJSON(cmd.OutOrStdout(), r)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Purged %d message(s) from %s's queue.\n", r.TotalMessagesPurged, id)
			return nil
		}),
	}
}
