package cli

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// Changing a device is read–modify–write with the etag read (If-Match), so a concurrent change
// fails with PreconditionFailed instead of being overwritten: `update` and `renew-key` share it.
func (a *app) modifyDevice(ctx context.Context, c hubClient, id string, change func(*iothub.Device)) (iothub.Device, error) {
	d, err := c.GetDevice(ctx, id)
	if err != nil {
		return iothub.Device{}, err
	}
	change(&d)
	return c.PutDevice(ctx, d, d.ETag)
}

func parseDeviceStatus(s string) (iothub.DeviceStatus, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "enabled", "enable":
		return iothub.DeviceEnabled, nil
	case "disabled", "disable":
		return iothub.DeviceDisabled, nil
	}
	return "", usageErrorf("--status %q: want enabled or disabled", s)
}

func (a *app) deviceUpdate() *cobra.Command {
	var status, reason, primary, secondary string
	cmd := &cobra.Command{
		Use:   "update ID [--status enabled|disabled] [--status-reason TEXT] [--primary-key K] [--secondary-key K]",
		Short: "Change a device's status, status reason or keys",
		Long: `Change a registered device. Only what you name changes. The device is read and written back with
the etag read, so a change made meanwhile by someone else fails (exit 1, PreconditionFailed) instead
of being overwritten; run the command again.

Disabling a device disconnects it; a changed key makes the board's connection string stale: put the
new one on the board with c2d device connection-string ID. To generate a fresh key use
c2d device renew-key.

Needs a policy with RegistryWrite (registryReadWrite or iothubowner).`,
		Example: `  c2d device update pump-7 --status disabled --status-reason "pump removed for service"
  c2d device update pump-7 --secondary-key "$(head -c32 /dev/urandom | base64)"`,
		Args:              exactArgs("ID"),
		ValidArgsFunction: a.completeDevices,
		RunE: a.deviceRunE(needRegistryWrite, func(cmd *cobra.Command, ctx context.Context, c hubClient, id string) error {
			f := cmd.Flags()
			if !f.Changed("status") && !f.Changed("status-reason") && primary == "" && secondary == "" {
				return usageErrorf("nothing to update: give --status, --status-reason, --primary-key or --secondary-key; see `c2d device update --help`")
			}
			var st iothub.DeviceStatus
			if f.Changed("status") {
				var err error
				if st, err = parseDeviceStatus(status); err != nil {
					return err
				}
			}
			for flag, k := range map[string]string{"--primary-key": primary, "--secondary-key": secondary} {
				if k == "" {
					continue
				}
				if b, err := base64.StdEncoding.DecodeString(k); err != nil || len(b) < 16 {
					return usageErrorf("%s: want a base64 key of at least 16 bytes, e.g. \"$(head -c32 /dev/urandom | base64)\"", flag)
				}
			}
			d, err := a.modifyDevice(ctx, c, id, func(d *iothub.Device) {
				if st != "" {
					d.Status = st
				}
				if f.Changed("status-reason") {
					d.StatusReason = reason
				}
				if primary != "" {
					d.Authentication.SymmetricKey.PrimaryKey = primary
				}
				if secondary != "" {
					d.Authentication.SymmetricKey.SecondaryKey = secondary
				}
			})
			if err != nil {
				return err
			}
			if err := a.printDevice(cmd, d, false); err != nil {
				return err
			}
			if (primary != "" || secondary != "") && !a.json() {
				fmt.Fprintf(a.env.Stderr, "The board's connection string changed with the key: put the new one on it: c2d device connection-string %s\n", id)
			}
			return nil
		}),
	}
	f := cmd.Flags()
	f.StringVar(&status, "status", "", "enabled or disabled")
	f.StringVar(&reason, "status-reason", "", "why (shown by device show; empty clears it)")
	f.StringVar(&primary, "primary-key", "", "new base64 primary SAS key")
	f.StringVar(&secondary, "secondary-key", "", "new base64 secondary SAS key")
	_ = cmd.RegisterFlagCompletionFunc("status", cobra.FixedCompletions([]string{"enabled", "disabled"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// newDeviceKey is a fresh 256-bit SAS key, the size the hub and Azure generate.
func newDeviceKey() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on Linux
	return base64.StdEncoding.EncodeToString(b)
}

func (a *app) deviceRenewKey() *cobra.Command {
	var which string
	cmd := &cobra.Command{
		Use:   "renew-key ID --key primary|secondary|swap",
		Short: "Replace a device's primary or secondary key with a new one, or swap them",
		Long: `Generate a new SAS key for a device (as az iot hub device-identity renew-key does), or swap its
primary and secondary keys.

Rotation without downtime: renew the secondary key, put the secondary connection string on the board
(c2d device connection-string ID --secondary), then renew the primary. A board whose key was renewed
can no longer connect with its old connection string.

Needs a policy with RegistryWrite (registryReadWrite or iothubowner).`,
		Example: `  c2d device renew-key pump-7 --key secondary
  c2d device connection-string pump-7 --secondary   # put this on the board, then:
  c2d device renew-key pump-7 --key primary`,
		Args:              exactArgs("ID"),
		ValidArgsFunction: a.completeDevices,
		RunE: a.deviceRunE(needRegistryWrite, func(cmd *cobra.Command, ctx context.Context, c hubClient, id string) error {
			switch which {
			case "primary", "secondary", "swap":
			case "":
				return usageErrorf("say which key: --key primary, --key secondary or --key swap")
			default:
				return usageErrorf("--key %q: want primary, secondary or swap", which)
			}
			d, err := a.modifyDevice(ctx, c, id, func(d *iothub.Device) {
				sk := &d.Authentication.SymmetricKey
				switch which {
				case "primary":
					sk.PrimaryKey = newDeviceKey()
				case "secondary":
					sk.SecondaryKey = newDeviceKey()
				case "swap":
					sk.PrimaryKey, sk.SecondaryKey = sk.SecondaryKey, sk.PrimaryKey
				}
			})
			if err != nil {
				return err
			}
			if a.json() {
				return writeJSON(cmd.OutOrStdout(), shownDevice(d, false))
			}
			done := "Renewed the " + which + " key of " + id
			if which == "swap" {
				done = "Swapped the primary and secondary keys of " + id
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s. Boards using the old key can no longer connect; print the new connection string with: c2d device connection-string %s\n", done, id)
			return nil
		}),
	}
	cmd.Flags().StringVar(&which, "key", "", "primary, secondary or swap")
	_ = cmd.RegisterFlagCompletionFunc("key", cobra.FixedCompletions([]string{"primary", "secondary", "swap"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

func (a *app) deviceSASToken() *cobra.Command {
	var (
		duration  time.Duration
		secondary bool
	)
	cmd := &cobra.Command{
		Use:   "sas-token ID [--duration 1h] [--secondary]",
		Short: "Print a SAS token a device can connect with (MQTT password), signed with its key",
		Long: `Sign a SAS token for the device with its key, for {HostName}/devices/{ID}, as az iot hub
generate-sas-token --device-id does. Use it as the MQTT password of a test client (mosquitto_pub, an
SDK) with the username {HostName}/{ID}/?api-version=2021-04-12. It is a secret until it expires.

Needs a policy with RegistryRead (registryRead, registryReadWrite or iothubowner) to read the key.`,
		Example: `  c2d device sas-token pump-7 --duration 10m
  mosquitto_sub -h hub.local -p 8883 --cafile hub-ca.pem -V mqttv311 -q 1 -c -i pump-7 \
    -u 'hub.local/pump-7/?api-version=2021-04-12' -P "$(c2d device sas-token pump-7)" \
    -t 'devices/pump-7/messages/devicebound/#' -v`,
		Args:              exactArgs("ID"),
		ValidArgsFunction: a.completeDevices,
		RunE: a.deviceRunE(needRegistryRead, func(cmd *cobra.Command, ctx context.Context, c hubClient, id string) error {
			if duration <= 0 {
				return usageErrorf("--duration %s must be positive, e.g. 1h", duration)
			}
			d, err := c.GetDevice(ctx, id)
			if err != nil {
				return err
			}
			key := d.Authentication.SymmetricKey.PrimaryKey
			if secondary {
				key = d.Authentication.SymmetricKey.SecondaryKey
			}
			now := time.Now()
			tok, err := iothub.DeviceConnectionString{HostName: a.cs.HostName, DeviceID: id, SharedAccessKey: key}.Token(now, duration)
			if err != nil {
				return fmt.Errorf("sign a SAS token for device %q: %w", id, err)
			}
			if a.json() {
				return writeJSON(cmd.OutOrStdout(), struct {
					DeviceID      string    `json:"deviceId"`
					SAS           string    `json:"sas"`
					ExpiryTimeUTC time.Time `json:"expiryTimeUtc"`
				}{id, tok, now.Add(duration).UTC().Truncate(time.Second)})
			}
			fmt.Fprintln(cmd.OutOrStdout(), tok)
			return nil
		}),
	}
	cmd.Flags().DurationVar(&duration, "duration", time.Hour, "how long the token is valid")
	cmd.Flags().BoolVar(&secondary, "secondary", false, "sign with the secondary key")
	return cmd
}
