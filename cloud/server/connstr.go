package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/c2d-project/c2d/cloud/hub"
	"github.com/c2d-project/c2d/cloud/iothub"
)

// ErrNoPolicy is returned by ConnectionString for a policy the store does not have.
var ErrNoPolicy = errors.New("no such shared access policy")

// ConnectionString reads a shared access policy from dataDir's store and formats its service
// connection string for hostName. It only reads (hub.ReadPolicies): it works while the hub runs
// and never runs the hub's recovery or timers, which opening the hub would.
func ConnectionString(ctx context.Context, dataDir, hostName, policy string) (iothub.ServiceConnectionString, error) {
	return StoreConnectionString(ctx, "", dataDir, hostName, policy)
}

// StoreConnectionString is ConnectionString for a store setting (Config.Store): with a
// PostgreSQL store it reads the cluster's shared policies.
func StoreConnectionString(ctx context.Context, store, dataDir, hostName, policy string) (iothub.ServiceConnectionString, error) {
	var cs iothub.ServiceConnectionString
	ps, err := hub.ReadStorePolicies(ctx, store, dataDir)
	if hub.IsPostgresURL(store) {
		dataDir = hub.StoreName(store, dataDir)
		if err != nil {
			return cs, err
		}
	}
	if errors.Is(err, os.ErrNotExist) {
		return cs, fmt.Errorf("no hub store in %s (start `c2d-hub serve --data %s` once first)", dataDir, dataDir)
	}
	if err != nil {
		return cs, err
	}
	var names []string
	for _, p := range ps {
		if p.Name == policy {
			return iothub.ServiceConnectionString{HostName: hostName, SharedAccessKeyName: p.Name, SharedAccessKey: p.PrimaryKey}, nil
		}
		names = append(names, p.Name)
	}
	return cs, fmt.Errorf("%w %q in %s (have: %s)", ErrNoPolicy, policy, dataDir, strings.Join(names, ", "))
}
