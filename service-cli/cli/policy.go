package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// policyRenewer is the part of the hub client `policy renew-key` needs (*apiclient.Client has it).
type policyRenewer interface {
	RenewPolicyKey(ctx context.Context, name, which string) (iothub.PolicyKeys, error)
}

// policyRenewOutput is `policy renew-key -o json`.
type policyRenewOutput struct {
	Policy           string   `json:"policy"`
	Renewed          string   `json:"renewed"`
	Rights           []string `json:"rights"`
	ConnectionString string   `json:"connectionString"`
}

func (a *app) policyCommand() *cobra.Command {
	cmd := group(&cobra.Command{
		Use:   "policy",
		Short: "Rotate shared access policy keys",
	})
	var which string
	renew := &cobra.Command{
		Use:   "renew-key NAME",
		Short: "Replace a policy's primary or secondary key (or swap them)",
		Long: `Replace a shared access policy's primary or secondary key with a fresh random one, or swap the
two (--key primary|secondary|swap). Tokens signed with a replaced key stop working at once, and
devices connected with such a token are disconnected. Prints the policy's connection string with
its new primary key (a secret: store it where the old one was).

Rotate without downtime: move clients to the secondary key, renew the primary, move them back,
renew the secondary. Needs the iothubowner policy. On the hub's machine the same is
` + "`c2d-hub policy renew-key NAME`" + `.`,
		Example: `  c2d policy renew-key service
  c2d policy renew-key device --key secondary -o json`,
		Args: exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			a.about("", "", needRegistryWrite)
			a.subj.policies = "policy 'iothubowner'"
			a.subj.needs = "every right (iothubowner)"
			c, err := a.client()
			if err != nil {
				return err
			}
			r, ok := c.(policyRenewer)
			if !ok {
				return fmt.Errorf("this hub client cannot renew policy keys")
			}
			ctx, cancel := a.call(cmd)
			defer cancel()
			pk, err := r.RenewPolicyKey(ctx, args[0], which)
			if err != nil {
				return err
			}
			cs := iothub.ServiceConnectionString{HostName: a.cs.HostName, SharedAccessKeyName: pk.KeyName, SharedAccessKey: pk.PrimaryKey}
			if a.json() {
				return writeJSON(cmd.OutOrStdout(), policyRenewOutput{Policy: pk.KeyName, Renewed: which, Rights: pk.Rights, ConnectionString: cs.String()})
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "renewed the %s key of policy %s; its connection string now:\n%s\n", which, pk.KeyName, cs)
			return err
		},
	}
	renew.Flags().StringVar(&which, "key", "primary", "which key: primary, secondary or swap")
	cmd.AddCommand(renew)
	return cmd
}
