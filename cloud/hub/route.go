package hub

import (
	"context"
	"encoding/json"
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

// maxWakePatch bounds a desired patch carried in a wake-up (NOTIFY's payload limit); a larger one
// is announced without it and the device's node reads the twin's desired section instead.
const maxWakePatch = 3000

// desiredWake is one twin desired change in a wake-up.
type desiredWake struct {
	Device  string          `json:"i"`
	Version int64           `json:"v"`
	Patch   json.RawMessage `json:"p,omitempty"` // the notification's body; absent when too large
}

// PublishDesiredChange tells the other nodes that deviceID's desired properties changed to version
// (patch: the notification's JSON body), for a device with no session on this node: the node
// holding it passes the change on (OnDesiredChange). Coalesced with the other wake-ups and best
// effort like them: a board whose node misses it reads its twin at its next connect. A no-op on a
// hub that is not in a cluster.
func (h *Hub) PublishDesiredChange(deviceID string, version int64, patch []byte) {
	c := h.cl
	if c == nil {
		return
	}
	if len(patch) > maxWakePatch || !json.Valid(patch) {
		patch = nil
	}
	c.mu.Lock()
	c.out.Desired = append(c.out.Desired, desiredWake{Device: deviceID, Version: version, Patch: patch})
	c.mu.Unlock()
	c.kickSender()
}

// OnDesiredChange registers what runs when another node announces a desired change
// (PublishDesiredChange); patch is nil when it was too large to carry. fn runs on the listener's
// goroutine: it must not block.
func (h *Hub) OnDesiredChange(fn func(deviceID string, version int64, patch []byte)) {
	if h.cl == nil {
		return
	}
	h.cl.mu.Lock()
	h.cl.onDesired = fn
	h.cl.mu.Unlock()
}

func (c *cluster) desiredChanged(ds []desiredWake) {
	if len(ds) == 0 {
		return
	}
	c.mu.Lock()
	fn := c.onDesired
	c.mu.Unlock()
	if fn == nil {
		return
	}
	for _, d := range ds {
		var patch []byte
		if len(d.Patch) > 0 {
			patch = d.Patch
		}
		fn(d.Device, d.Version, patch)
	}
}
