package hub

import (
	"context"
	"fmt"
	"time"
)

// Routing between nodes: each node advertises where its service API is reached (its nodes row),
// so that a node asked for something only the device's session can do (a direct method) can
// pass the request to the node holding that session (cloud/methods). The route is advice read
// without locks: what the device's node does with the request is still checked there.

// NodeRoute is where the node holding a device's session is reached.
type NodeRoute struct {
	Node     string // its node id
	APIURL   string // its service API: https://host:port (or http:// when it serves no HTTPS)
	HostName string // the host name SAS tokens for that API are signed for
}

// nodeRoute is a NodeRoute as stored, with the node's last heartbeat.
type nodeRoute struct {
	NodeRoute
	heartbeat time.Time
}

// Node is this node's id in a cluster; "" for a hub on its own store.
func (h *Hub) Node() string {
	if h.cl == nil {
		return ""
	}
	return h.cl.node
}

// AdvertiseAPI records where the other nodes reach this node's service API (url) and the host
// name to sign their tokens for. A no-op on a hub that is not in a cluster. The heartbeat keeps
// it: a node declared dead and re-registered advertises it again.
func (h *Hub) AdvertiseAPI(ctx context.Context, url, host string) error {
	c := h.cl
	if c == nil {
		return nil
	}
	c.mu.Lock()
	c.apiURL, c.apiHost = url, host
	c.mu.Unlock()
	err := h.update(ctx, func(tx storeTx, _ *effects) error { return tx.setNodeAPI(c.node, url, host) })
	if err != nil {
		return fmt.Errorf("advertise this node's API (%s): %w", url, err)
	}
	return nil
}

// DeviceRoute returns the node that holds deviceID's session when that is another node, alive
// (heartbeat within the node timeout) and advertising its API; ok is false otherwise (a hub on
// its own store, no session anywhere, the session here, or its node dead or unreachable).
func (h *Hub) DeviceRoute(ctx context.Context, deviceID string) (_ NodeRoute, ok bool, _ error) {
	c := h.cl
	if c == nil {
		return NodeRoute{}, false, nil
	}
	var r nodeRoute
	var found bool
	err := h.view(ctx, func(tx storeTx) error {
		var err error
		r, found, err = tx.deviceRoute(deviceID)
		return err
	})
	if err != nil {
		return NodeRoute{}, false, err
	}
	if !found || r.Node == c.node || r.APIURL == "" || h.now().Sub(r.heartbeat) >= nodeTimeout {
		return NodeRoute{}, false, nil
	}
	return r.NodeRoute, true, nil
}

// advertised is what registerNode writes for this node's API.
func (c *cluster) advertised() (url, host string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.apiURL, c.apiHost
}
