package cli

import (
	"context"
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/c2d-project/c2d/cloud/iothub"
)

func (a *app) deviceCommand() *cobra.Command {
	cmd := group(&cobra.Command{
		Use:   "device",
		Short: "Register devices, show them, switch them on and off, get their connection strings",
		Long: `Manage the hub's device registry.

A device must be registered before it can connect. Each device has two SAS keys; its connection
string (c2d device connection-string ID) goes into the board's agent configuration.`,
	})
	cmd.AddCommand(a.deviceCreate(), a.deviceList(), a.deviceShow(), a.deviceDelete(),
		a.deviceSetStatus(iothub.DeviceEnabled), a.deviceSetStatus(iothub.DeviceDisabled), a.deviceConnectionString(),
		a.deviceUpdate(), a.deviceRenewKey(), a.deviceSASToken())
	return cmd
}

// shownDevice is a device as c2d prints it: keys masked unless asked for.
func shownDevice(d iothub.Device, showKeys bool) iothub.Device {
	if !showKeys {
		if d.Authentication.SymmetricKey.PrimaryKey != "" {
			d.Authentication.SymmetricKey.PrimaryKey = maskedKey
		}
		if d.Authentication.SymmetricKey.SecondaryKey != "" {
			d.Authentication.SymmetricKey.SecondaryKey = maskedKey
		}
	}
	return d
}

func (a *app) printDevice(cmd *cobra.Command, d iothub.Device, showKeys bool) error {
	d = shownDevice(d, showKeys)
	w := cmd.OutOrStdout()
	if a.json() {
		return writeJSON(w, d)
	}
	keyNote := ""
	if !showKeys {
		keyNote = " (hidden; --show-keys to print)"
	}
	conn := d.ConnectionState
	if conn == "" {
		conn = "Disconnected"
	}
	if !d.ConnectionStateUpdatedTime.IsZero() {
		conn += " since " + when(d.ConnectionStateUpdatedTime)
	}
	return fields(w,
		"Device ID", d.DeviceID,
		"Status", string(d.Status)+reasonSuffix(d.StatusReason),
		"Connection", conn,
		"Last activity", when(d.LastActivityTime),
		"Queued messages", strconv.Itoa(d.CloudToDeviceMessageCount),
		"Authentication", d.Authentication.Type,
		"Primary key", d.Authentication.SymmetricKey.PrimaryKey+keyNote,
		"Secondary key", d.Authentication.SymmetricKey.SecondaryKey+keyNote,
		"Generation ID", d.GenerationID,
		"ETag", d.ETag,
	)
}

func reasonSuffix(r string) string {
	if r == "" {
		return ""
	}
	return " (" + r + ")"
}

func (a *app) deviceCreate() *cobra.Command {
	var primary, secondary string
	var showKeys bool
	cmd := &cobra.Command{
		Use:   "create ID",
		Short: "Register a device (keys are generated unless given)",
		Long: `Register a device in the hub. The hub generates both SAS keys unless you give them (base64,
e.g. from another hub you migrate from). Keys are not printed unless --show-keys; to set up the
board, print its connection string with c2d device connection-string ID.

Needs a policy with RegistryWrite (registryReadWrite or iothubowner).`,
		Example: `  c2d device create pump-7
  c2d device create pump-7 --primary-key "$(head -c32 /dev/urandom | base64)"
  c2d device create pump-7 -o json`,
		Args: exactArgs("ID"),
		RunE: a.deviceRunE(needRegistryWrite, func(cmd *cobra.Command, ctx context.Context, c hubClient, id string) error {
			// A create is a PUT without If-Match: the hub refuses it for an existing device
			// (409001 DeviceAlreadyExists), so it never resets a device or replaces its keys.
			d, err := c.CreateDevice(ctx, id, primary, secondary)
			if err != nil {
				return err
			}
			if err := a.printDevice(cmd, d, showKeys); err != nil {
				return err
			}
			if !a.json() && a.env.StderrIsTerminal {
				fmt.Fprintf(a.env.Stderr, "\nNext: put the device's connection string on the board: c2d device connection-string %s\n", id)
			}
			return nil
		}),
	}
	cmd.Flags().StringVar(&primary, "primary-key", "", "base64 primary SAS key (default: generated)")
	cmd.Flags().StringVar(&secondary, "secondary-key", "", "base64 secondary SAS key (default: generated)")
	cmd.Flags().BoolVar(&showKeys, "show-keys", false, "print the device's keys")
	return cmd
}

func (a *app) deviceList() *cobra.Command {
	var showKeys, connected bool
	var status string
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List registered devices with status, connection and queued messages",
		Long: `List every registered device, sorted by id.

Needs a policy with RegistryRead (registryRead, registryReadWrite or iothubowner).`,
		Example: `  c2d device list
  c2d device list --connected
  c2d device list --status disabled -o json | jq -r '.[].deviceId'`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			var want iothub.DeviceStatus
			if status != "" {
				st, err := parseDeviceStatus(status)
				if err != nil {
					return err
				}
				want = st
			}
			a.about("", "", needRegistryRead)
			c, err := a.client()
			if err != nil {
				return err
			}
			ctx, cancel := a.call(cmd)
			defer cancel()
			devs, err := c.ListDevices(ctx)
			if err != nil {
				return err
			}
			shown := make([]iothub.Device, 0, len(devs))
			for _, d := range devs {
				if (want != "" && d.Status != want) || (connected && d.ConnectionState != "Connected") {
					continue
				}
				shown = append(shown, shownDevice(d, showKeys))
			}
			if a.json() {
				return writeJSON(cmd.OutOrStdout(), shown)
			}
			if len(shown) == 0 && len(devs) > 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "No device matches (%d registered; `c2d device list` shows them all).\n", len(devs))
				return nil
			}
			if len(shown) == 0 {
				fmt.Fprintln(cmd.OutOrStdout(), "No devices registered. Register one with: c2d device create ID")
				return nil
			}
			t := newTable(cmd.OutOrStdout(), "DEVICE ID", "STATUS", "CONNECTION", "LAST ACTIVITY", "QUEUED")
			for _, d := range shown {
				conn := d.ConnectionState
				if conn == "" {
					conn = "Disconnected"
				}
				t.row(d.DeviceID, string(d.Status), conn, when(d.LastActivityTime), strconv.Itoa(d.CloudToDeviceMessageCount))
			}
			return t.flush()
		},
	}
	cmd.Flags().BoolVar(&showKeys, "show-keys", false, "include the devices' keys in JSON output")
	cmd.Flags().StringVar(&status, "status", "", "only devices with this status: enabled or disabled")
	cmd.Flags().BoolVar(&connected, "connected", false, "only devices connected now")
	_ = cmd.RegisterFlagCompletionFunc("status", cobra.FixedCompletions([]string{"enabled", "disabled"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

func (a *app) deviceShow() *cobra.Command {
	var showKeys bool
	cmd := &cobra.Command{
		Use:   "show ID",
		Short: "Show one device: status, connection, last activity, queued messages",
		Long: `Show one device. Its SAS keys are masked unless --show-keys.

Needs a policy with RegistryRead (registryRead, registryReadWrite or iothubowner).`,
		Example: `  c2d device show pump-7
  c2d device show pump-7 -o json | jq .connectionState`,
		Args:              exactArgs("ID"),
		ValidArgsFunction: a.completeDevices,
		RunE: a.deviceRunE(needRegistryRead, func(cmd *cobra.Command, ctx context.Context, c hubClient, id string) error {
			d, err := c.GetDevice(ctx, id)
			if err != nil {
				return err
			}
			return a.printDevice(cmd, d, showKeys)
		}),
	}
	cmd.Flags().BoolVar(&showKeys, "show-keys", false, "print the device's keys")
	return cmd
}

func (a *app) deviceDelete() *cobra.Command {
	return &cobra.Command{
		Use:     "delete ID",
		Aliases: []string{"rm"},
		Short:   "Remove a device, its queue and its pending feedback",
		Long: `Remove a device from the registry. Its queued messages and pending feedback go with it, and a
connected board is disconnected and can no longer connect.

Needs a policy with RegistryWrite (registryReadWrite or iothubowner).`,
		Example:           `  c2d device delete pump-7`,
		Args:              exactArgs("ID"),
		ValidArgsFunction: a.completeDevices,
		RunE: a.deviceRunE(needRegistryWrite, func(cmd *cobra.Command, ctx context.Context, c hubClient, id string) error {
			if err := c.DeleteDevice(ctx, id); err != nil {
				return err
			}
			if a.json() {
				return writeJSON(cmd.OutOrStdout(), struct {
					DeviceID string `json:"deviceId"`
					Deleted  bool   `json:"deleted"`
				}{id, true})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Deleted device %s.\n", id)
			return nil
		}),
	}
}

func (a *app) deviceSetStatus(status iothub.DeviceStatus) *cobra.Command {
	verb, short, long := "enable", "Allow a device to connect again", `Set the device's status to enabled: it may connect and receive its queued messages.`
	if status == iothub.DeviceDisabled {
		verb, short, long = "disable", "Stop a device from connecting (its queue is kept)",
			`Set the device's status to disabled: it is disconnected and refused until enabled again.
Messages can still be queued for it; they wait (and may expire) until it is enabled.`
	}
	return &cobra.Command{
		Use:               verb + " ID",
		Short:             short,
		Long:              long + "\n\nNeeds a policy with RegistryWrite (registryReadWrite or iothubowner).",
		Example:           "  c2d device " + verb + " pump-7",
		Args:              exactArgs("ID"),
		ValidArgsFunction: a.completeDevices,
		RunE: a.deviceRunE(needRegistryWrite, func(cmd *cobra.Command, ctx context.Context, c hubClient, id string) error {
			d, err := c.SetDeviceStatus(ctx, id, status)
			if err != nil {
				return err
			}
			if a.json() {
				return writeJSON(cmd.OutOrStdout(), shownDevice(d, false))
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Device %s is %s.\n", id, d.Status)
			return nil
		}),
	}
}

func (a *app) deviceConnectionString() *cobra.Command {
	var secondary bool
	cmd := &cobra.Command{
		Use:   "connection-string ID",
		Short: "Print the connection string to put on the board (contains its key)",
		Long: `Print the device connection string (HostName=...;DeviceId=...;SharedAccessKey=...) that the
board's agent uses to connect. It contains the device's key: treat it as a secret. HostName is the
hub's name from your policy connection string.

Needs a policy with RegistryRead (registryRead, registryReadWrite or iothubowner).`,
		Example: `  c2d device connection-string pump-7
  c2d device connection-string pump-7 | ssh pi@pump-7 "sudo install -m 0640 -g c2d-agent /dev/stdin /etc/c2d/connection-string"`,
		Args:              exactArgs("ID"),
		ValidArgsFunction: a.completeDevices,
		RunE: a.deviceRunE(needRegistryRead, func(cmd *cobra.Command, ctx context.Context, c hubClient, id string) error {
			d, err := c.GetDevice(ctx, id)
			if err != nil {
				return err
			}
			key, which := d.Authentication.SymmetricKey.PrimaryKey, "primary"
			if secondary {
				key, which = d.Authentication.SymmetricKey.SecondaryKey, "secondary"
			}
			if key == "" {
				return &cliError{exit: ExitError, code: "NoKey",
					msg: fmt.Sprintf("device %q has no %s SAS key (authentication type %q); it cannot use a key connection string", id, which, d.Authentication.Type)}
			}
			s := iothub.DeviceConnectionString{HostName: a.cs.HostName, DeviceID: id, SharedAccessKey: key}.String()
			if a.json() {
				return writeJSON(cmd.OutOrStdout(), struct {
					DeviceID         string `json:"deviceId"`
					ConnectionString string `json:"connectionString"`
				}{id, s})
			}
			fmt.Fprintln(cmd.OutOrStdout(), s)
			return nil
		}),
	}
	cmd.Flags().BoolVar(&secondary, "secondary", false, "use the secondary key (for key rotation)")
	return cmd
}
