package server

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/c2d-project/c2d/cloud/apiclient"
	"github.com/c2d-project/c2d/cloud/hub"
	"github.com/c2d-project/c2d/cloud/iothub"
)

// RenewPolicyKey renews a shared access policy's key in the hub of dataDir (which: primary,
// secondary or swap). A running hub does it through its API, signed with iothubowner's key from
// the store, so that it drops the sessions the old key let in at once; a stopped hub's store is
// opened and changed directly.
func RenewPolicyKey(ctx context.Context, cfg Config, name, which string) (iothub.PolicyKeys, error) {
	k, err := hub.ParseRenewKey(which)
	if err != nil {
		return iothub.PolicyKeys{}, err
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, "hub.db")); err != nil {
		return iothub.PolicyKeys{}, fmt.Errorf("no hub store in %s (start `c2d-hub serve --data %s` once first)", cfg.DataDir, cfg.DataDir)
	}
	if ep, err := ReadEndpoints(cfg.DataDir); err == nil && ep.PID > 0 && syscall.Kill(ep.PID, 0) == nil && (ep.HTTP != "" || ep.HTTPS != "") {
		owner, err := ConnectionString(ctx, cfg.DataDir, ep.HostName, "iothubowner")
		if err != nil {
			return iothub.PolicyKeys{}, err
		}
		o := apiclient.Options{Endpoint: "http://" + ep.HTTP}
		if ep.HTTP == "" {
			o = apiclient.Options{Endpoint: "https://" + ep.HTTPS, CAFile: ep.CA}
		}
		c, err := apiclient.New(owner, o)
		if err != nil {
			return iothub.PolicyKeys{}, err
		}
		pk, err := c.RenewPolicyKey(ctx, name, string(k))
		if err != nil {
			return pk, fmt.Errorf("renew through the running hub (pid %d, %s): %w", ep.PID, o.Endpoint, err)
		}
		return pk, nil
	}
	hc := cfg.HubConfig()
	h, err := hub.Open(ctx, cfg.DataDir, hc, hub.Events{})
	if err != nil {
		return iothub.PolicyKeys{}, err
	}
	p, err := h.RenewPolicyKey(ctx, name, k)
	if cerr := h.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return iothub.PolicyKeys{}, err
	}
	pk := iothub.PolicyKeys{KeyName: p.Name, PrimaryKey: p.PrimaryKey, SecondaryKey: p.SecondaryKey}
	for _, r := range p.Rights {
		pk.Rights = append(pk.Rights, string(r))
	}
	return pk, nil
}
