package hub

import (
	"context"
	"database/sql"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/c2d-project/c2d/cloud/iothub"
	"github.com/c2d-project/c2d/internal/version"
)

// builtinPolicies are Azure's built-in shared access policies, created with random keys on first
// start.
var builtinPolicies = []Policy{
	{Name: "iothubowner", Rights: []Permission{RegistryRead, RegistryWrite, ServiceConnect, DeviceConnect}},
	{Name: "service", Rights: []Permission{ServiceConnect}},
	{Name: "device", Rights: []Permission{DeviceConnect}},
	{Name: "registryRead", Rights: []Permission{RegistryRead}},
	{Name: "registryReadWrite", Rights: []Permission{RegistryRead, RegistryWrite}},
}

// Has reports whether the policy grants right.
func (p Policy) Has(right Permission) bool { return slices.Contains(p.Rights, right) }

func ensurePolicies(tx storeTx) ([]Policy, error) {
	have, err := tx.policies()
	if err != nil {
		return nil, err
	}
	for _, b := range builtinPolicies {
		if slices.ContainsFunc(have, func(p Policy) bool { return p.Name == b.Name }) {
			continue
		}
		p := Policy{Name: b.Name, PrimaryKey: newKey(), SecondaryKey: newKey(), Rights: b.Rights}
		if err := tx.insertPolicy(p); err != nil {
			return nil, err
		}
		have = append(have, p)
	}
	return have, nil
}

// Policy returns a shared access policy by name (case-sensitive, as Azure's key names are).
func (h *Hub) Policy(name string) (Policy, bool) {
	h.polMu.RLock()
	defer h.polMu.RUnlock()
	p, ok := h.pols[name]
	if ok {
		p.Rights = slices.Clone(p.Rights)
	}
	return p, ok
}

// Policies returns every shared access policy, sorted by name.
func (h *Hub) Policies() []Policy {
	h.polMu.RLock()
	defer h.polMu.RUnlock()
	out := make([]Policy, 0, len(h.pols))
	for _, p := range h.pols {
		p.Rights = slices.Clone(p.Rights)
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b Policy) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// OnDeviceGone registers the callback called with a device id whenever that device is deleted or
// disabled (after the hub stopped delivering to it), so the broker drops its session. Set it
// before serving traffic; nil is fine.
func (h *Hub) OnDeviceGone(fn func(deviceID string)) {
	h.mu.Lock()
	h.gone = fn
	h.mu.Unlock()
}

// deviceGone stops delivering to a deleted or disabled device and tells the broker, on every node
// of a cluster.
func (h *Hub) deviceGone(id string) {
	h.dropLocal(id)
	if h.cl != nil {
		h.cl.publishGone(id)
	}
}

// dropLocal detaches the device's session on this node, if any, and has the broker drop it.
func (h *Hub) dropLocal(id string) {
	l := h.attachMu.of(id)
	l.Lock()
	h.mu.Lock()
	ds := h.devs[id]
	h.mu.Unlock()
	if ds != nil {
		h.detach(ds)
	}
	l.Unlock()
	h.mu.Lock()
	fn := h.gone
	h.mu.Unlock()
	if fn != nil {
		fn(id)
	}
}

// etagMatches applies If-Match: "" and "*" match anything; quotes and a weak prefix are ignored.
func etagMatches(ifMatch, etag string) bool {
	m := strings.TrimSpace(ifMatch)
	if m == "" || m == "*" {
		return true
	}
	m = strings.TrimPrefix(m, "W/")
	m = strings.Trim(m, `"`)
	return m == etag
}

func checkKey(field, k string) error {
	if k == "" {
		return nil
	}
	b, err := base64.StdEncoding.DecodeString(k)
	if err != nil {
		return errInvalid("%s: not valid base64: %v", field, err)
	}
	if len(b) < 16 || len(b) > 64 {
		return errInvalid("%s: key is %d bytes; Azure accepts 16 to 64", field, len(b))
	}
	return nil
}

// PutDevice creates (keys generated when empty, status enabled when empty) or updates a device.
// As in Azure, ifMatch "" means create: an existing device is ErrDeviceExists; "*" updates
// unconditionally, an etag updates only that version (a mismatch is ErrPreconditionFailed). Every
// update changes the etag; generationId is set once at creation. On update, empty keys and an
// empty status keep the stored ones. Disabling a device drops its session (OnDeviceGone).
func (h *Hub) PutDevice(ctx context.Context, d iothub.Device, ifMatch string) (dev iothub.Device, created bool, err error) {
	if err := iothub.ValidateDeviceID(d.DeviceID); err != nil {
		return iothub.Device{}, false, errInvalid("deviceId: %v", err)
	}
	switch d.Status {
	case "", iothub.DeviceEnabled, iothub.DeviceDisabled:
	default:
		return iothub.Device{}, false, errInvalid("status: %q: want enabled or disabled", d.Status)
	}
	if t := d.Authentication.Type; t != "" && !strings.EqualFold(t, "sas") {
		return iothub.Device{}, false, errInvalid("authentication.type: %q: c2d-hub supports sas only", t)
	}
	sk := d.Authentication.SymmetricKey
	if err := checkKey("authentication.symmetricKey.primaryKey", sk.PrimaryKey); err != nil {
		return iothub.Device{}, false, err
	}
	if err := checkKey("authentication.symmetricKey.secondaryKey", sk.SecondaryKey); err != nil {
		return iothub.Device{}, false, err
	}
	var row deviceRow
	var count int
	disabled, rekeyed := false, false
	err = h.updateFor(ctx, d.DeviceID, func(tx storeTx, e *effects) error {
		created, disabled, rekeyed = false, false, false
		now := h.now()
		cur, ok, err := tx.device(d.DeviceID)
		if err != nil {
			return err
		}
		if !ok {
			if m := strings.TrimSpace(ifMatch); m != "" && m != "*" {
				return coded(ErrPreconditionFailed, iothub.CodePreconditionFailed,
					"device %q does not exist, so If-Match %s cannot match", d.DeviceID, ifMatch)
			}
			row = deviceRow{
				ID: d.DeviceID, GenerationID: randomToken(12), ETag: randomToken(9),
				Status: d.Status, StatusReason: d.StatusReason,
				PrimaryKey: sk.PrimaryKey, SecondaryKey: sk.SecondaryKey, UpdatedAt: now,
			}
			if row.Status == "" {
				row.Status = iothub.DeviceEnabled
			}
			if row.PrimaryKey == "" {
				row.PrimaryKey = newKey()
			}
			if row.SecondaryKey == "" {
				row.SecondaryKey = newKey()
			}
			created = true
			return tx.insertDevice(row)
		}
		// Azure's registry: a PUT without If-Match creates; on an existing device it is refused,
		// so a create can never reset a device's status or replace the keys its board uses.
		// Updates say If-Match: "*" (unconditional) or the etag they read.
		if strings.TrimSpace(ifMatch) == "" {
			return coded(ErrDeviceExists, iothub.CodeDeviceAlreadyExists,
				"device %q already exists (update it with If-Match: its etag, or *)", d.DeviceID)
		}
		if !etagMatches(ifMatch, cur.ETag) {
			return coded(ErrPreconditionFailed, iothub.CodePreconditionFailed,
				"device %q has etag %q, If-Match was %s: read it again and retry", d.DeviceID, cur.ETag, ifMatch)
		}
		row = cur
		row.ETag = randomToken(9)
		row.UpdatedAt = now
		row.StatusReason = d.StatusReason
		if d.Status != "" {
			row.Status = d.Status
		}
		if sk.PrimaryKey != "" {
			row.PrimaryKey = sk.PrimaryKey
		}
		if sk.SecondaryKey != "" {
			row.SecondaryKey = sk.SecondaryKey
		}
		disabled = cur.Status != iothub.DeviceDisabled && row.Status == iothub.DeviceDisabled
		rekeyed = row.PrimaryKey != cur.PrimaryKey || row.SecondaryKey != cur.SecondaryKey
		if count, err = tx.pendingCount(d.DeviceID); err != nil {
			return err
		}
		return tx.updateDevice(row)
	})
	if err != nil {
		return iothub.Device{}, false, err
	}
	if disabled {
		h.log.Info("device disabled", "device", row.ID, "reason", row.StatusReason)
		h.deviceGone(row.ID)
	} else if rekeyed {
		h.log.Info("device keys changed; sessions whose token no longer verifies are dropped", "device", row.ID)
		h.credentialsChanged(row.ID)
	}
	return h.toDevice(row, count), created, nil
}

func (h *Hub) toDevice(r deviceRow, pending int) iothub.Device {
	h.mu.Lock()
	ci := h.conns[r.ID]
	act := h.activity[r.ID]
	h.mu.Unlock()
	state := "Disconnected"
	if ci.connected {
		state = "Connected"
	}
	return iothub.Device{
		DeviceID:                   r.ID,
		GenerationID:               r.GenerationID,
		ETag:                       r.ETag,
		Status:                     r.Status,
		StatusReason:               r.StatusReason,
		ConnectionState:            state,
		ConnectionStateUpdatedTime: ci.updated,
		LastActivityTime:           act,
		CloudToDeviceMessageCount:  pending,
		Authentication: iothub.Authentication{
			Type:         "sas",
			SymmetricKey: iothub.SymmetricKey{PrimaryKey: r.PrimaryKey, SecondaryKey: r.SecondaryKey},
		},
	}
}

// GetDevice returns a device with live connection state and queue count.
func (h *Hub) GetDevice(ctx context.Context, id string) (iothub.Device, error) {
	var row deviceRow
	var count int
	err := h.view(ctx, func(tx storeTx) error {
		var ok bool
		var err error
		if row, ok, err = tx.device(id); err != nil {
			return err
		} else if !ok {
			return errDeviceNotFound(id)
		}
		count, err = tx.pendingCount(id)
		return err
	})
	if err != nil {
		return iothub.Device{}, err
	}
	return h.toDevice(row, count), nil
}

// DeleteDevice deletes a device, its queue (pending and settled outcomes) and its pending feedback;
// a connected session is dropped by the broker (it learns through OnDeviceGone). ifMatch as in
// PutDevice.
func (h *Hub) DeleteDevice(ctx context.Context, id, ifMatch string) error {
	err := h.updateFor(ctx, id, func(tx storeTx, e *effects) error {
		cur, ok, err := tx.device(id)
		if err != nil {
			return err
		}
		if !ok {
			return errDeviceNotFound(id)
		}
		if !etagMatches(ifMatch, cur.ETag) {
			return coded(ErrPreconditionFailed, iothub.CodePreconditionFailed,
				"device %q has etag %q, If-Match was %s: read it again and retry", id, cur.ETag, ifMatch)
		}
		if err := tx.deleteConnHistory(id); err != nil {
			return err
		}
		return tx.deleteDevice(id)
	})
	if err != nil {
		return err
	}
	h.log.Info("device deleted", "device", id)
	h.deviceGone(id)
	h.mu.Lock()
	delete(h.conns, id)
	delete(h.activity, id)
	h.mu.Unlock()
	h.notifyDevice(id)
	return nil
}

// ListDevices returns every device, sorted by id.
func (h *Hub) ListDevices(ctx context.Context) ([]iothub.Device, error) {
	var rows []deviceRow
	var counts map[string]int
	err := h.view(ctx, func(tx storeTx) error {
		var err error
		if rows, err = tx.devices(); err != nil {
			return err
		}
		counts, err = tx.pendingCounts()
		return err
	})
	if err != nil {
		return nil, err
	}
	out := make([]iothub.Device, len(rows))
	for i, r := range rows {
		out[i] = h.toDevice(r, counts[r.ID])
	}
	return out, nil
}

// Status sums up the hub for GET /statistics/service.
func (h *Hub) Status(ctx context.Context) (iothub.HubStatus, error) {
	st := iothub.HubStatus{Version: version.Version, ExtensionDispositions: true}
	err := h.view(ctx, func(tx storeTx) error {
		rows, err := tx.devices()
		if err != nil {
			return err
		}
		st.TotalDeviceCount = len(rows)
		for _, r := range rows {
			if r.Status == iothub.DeviceEnabled {
				st.EnabledDeviceCount++
			}
		}
		counts, err := tx.pendingCounts()
		if err != nil {
			return err
		}
		for _, n := range counts {
			st.QueuedMessageCount += n
		}
		if st.PendingFeedbackCount, err = tx.pendingFeedback(); err != nil || h.cl == nil {
			return err
		}
		st.Node = h.cl.node
		nodes, err := tx.nodes()
		for _, n := range nodes {
			st.Nodes = append(st.Nodes, iothub.NodeStatus{NodeID: n.ID, StartedTimeUTC: n.Started,
				HeartbeatTimeUTC: n.Heartbeat, DeviceCount: n.Devices, Version: n.Version, APIURL: n.APIURL})
		}
		return err
	})
	if err != nil {
		return iothub.HubStatus{}, err
	}
	h.mu.Lock()
	st.ConnectedDeviceCount = len(h.devs)
	h.mu.Unlock()
	return st, nil
}

// ReadStorePolicies is ReadPolicies for a store setting (Config.Store): PostgreSQL's policies, or
// SQLite's in dataDir.
func ReadStorePolicies(ctx context.Context, store, dataDir string) ([]Policy, error) {
	if IsPostgresURL(store) {
		return readPostgresPolicies(ctx, store)
	}
	return ReadPolicies(ctx, dataDir)
}

// ReadPolicies reads the shared access policies from dataDir's store without opening the hub:
// it works while a hub runs there (for `c2d-hub connection-string`). os.ErrNotExist (wrapped) when
// no hub has started in dataDir yet.
func ReadPolicies(ctx context.Context, dataDir string) ([]Policy, error) {
	path := filepath.Join(dataDir, "hub.db")
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("read policies: %w", err)
	}
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro&_pragma=busy_timeout(10000)&_pragma=query_only(1)")
	if err != nil {
		return nil, fmt.Errorf("read policies from %s: %w", path, err)
	}
	defer db.Close()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("read policies from %s: %w", path, err)
	}
	defer tx.Rollback()
	ps, err := (&sqlTx{ctx: ctx, tx: tx, d: sqliteDialect()}).policies()
	if err != nil {
		return nil, fmt.Errorf("read policies from %s: %w", path, err)
	}
	return ps, nil
}
