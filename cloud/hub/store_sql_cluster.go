package hub

import (
	"database/sql"
	"errors"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// Device ownership and node heartbeats (cluster.go). A device's session row is never deleted:
// its epoch only grows, so a stale epoch can never become current again.

func (t *sqlTx) claimDevice(deviceID, node string, now time.Time) (int64, error) {
	var epoch int64
	err := t.queryRow(`INSERT INTO device_sessions (device_id, node_id, epoch, since) VALUES (?, ?, 1, ?)
		ON CONFLICT (device_id) DO UPDATE SET node_id = excluded.node_id,
		epoch = device_sessions.epoch + 1, since = excluded.since RETURNING epoch`,
		deviceID, node, ms(now)).Scan(&epoch)
	return epoch, err
}

func (t *sqlTx) deviceOwner(deviceID string) (string, int64, bool, error) {
	var node string
	var epoch int64
	err := t.queryRow(`SELECT node_id, epoch FROM device_sessions WHERE device_id = ?`+t.forUpdate(), deviceID).Scan(&node, &epoch)
	if errors.Is(err, sql.ErrNoRows) {
		return "", 0, false, nil
	}
	return node, epoch, err == nil, err
}

func (t *sqlTx) releaseDevice(deviceID, node string, epoch int64) error {
	_, err := t.exec(`UPDATE device_sessions SET node_id = '' WHERE device_id = ? AND node_id = ? AND epoch = ?`,
		deviceID, node, epoch)
	return err
}

func (t *sqlTx) fenceDevice(deviceID string) error {
	_, err := t.exec(`UPDATE device_sessions SET node_id = '', epoch = epoch + 1 WHERE device_id = ?`, deviceID)
	return err
}

func (t *sqlTx) sessionsOf(node string) (map[string]int64, error) {
	rows, err := t.query(`SELECT device_id, epoch FROM device_sessions WHERE node_id = ?`+t.forUpdate(), node)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var id string
		var epoch int64
		if err := rows.Scan(&id, &epoch); err != nil {
			return nil, err
		}
		out[id] = epoch
	}
	return out, rows.Err()
}

func (t *sqlTx) registerNode(n nodeRow) error {
	_, err := t.exec(`INSERT INTO nodes (node_id, started, heartbeat, devices, version, api_url, api_host) VALUES (?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (node_id) DO UPDATE SET started = excluded.started, heartbeat = excluded.heartbeat,
		devices = excluded.devices, version = excluded.version, api_url = excluded.api_url, api_host = excluded.api_host`,
		n.ID, ms(n.Started), ms(n.Heartbeat), n.Devices, n.Version, n.APIURL, n.APIHost)
	return err
}

func (t *sqlTx) setNodeAPI(node, url, host string) error {
	_, err := t.exec(`UPDATE nodes SET api_url = ?, api_host = ? WHERE node_id = ?`, url, host, node)
	return err
}

// deviceRoute reads the node holding deviceID's session and that node's row (no row lock: a
// route is advice, every write is still fenced by the epoch).
func (t *sqlTx) deviceRoute(deviceID string) (nodeRoute, bool, error) {
	var r nodeRoute
	var hb int64
	err := t.queryRow(`SELECT s.node_id, n.heartbeat, n.api_url, n.api_host FROM device_sessions s
		JOIN nodes n ON n.node_id = s.node_id WHERE s.device_id = ?`, deviceID).Scan(&r.Node, &hb, &r.APIURL, &r.HostName)
	if errors.Is(err, sql.ErrNoRows) {
		return nodeRoute{}, false, nil
	}
	r.heartbeat = fromMs(hb)
	return r, err == nil, err
}

func (t *sqlTx) heartbeat(node string, now time.Time, devices int) (bool, error) {
	res, err := t.exec(`UPDATE nodes SET heartbeat = ?, devices = ? WHERE node_id = ?`, ms(now), devices, node)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

func (t *sqlTx) deadNodes(before time.Time) ([]string, error) {
	rows, err := t.query(`SELECT node_id FROM nodes WHERE heartbeat < ? ORDER BY node_id`+t.skipLocked(), ms(before))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	return out, rows.Err()
}

func (t *sqlTx) deleteNode(node string) error {
	_, err := t.exec(`DELETE FROM nodes WHERE node_id = ?`, node)
	return err
}

func (t *sqlTx) nodes() ([]nodeRow, error) {
	rows, err := t.query(`SELECT node_id, started, heartbeat, devices, version, api_url, api_host FROM nodes ORDER BY node_id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []nodeRow
	for rows.Next() {
		var n nodeRow
		var st, hb int64
		if err := rows.Scan(&n.ID, &st, &hb, &n.Devices, &n.Version, &n.APIURL, &n.APIHost); err != nil {
			return nil, err
		}
		n.Started, n.Heartbeat = fromMs(st), fromMs(hb)
		out = append(out, n)
	}
	return out, rows.Err()
}

func (t *sqlTx) enqueuedDevices() ([]string, error) {
	rows, err := t.query(`SELECT DISTINCT device_id FROM messages WHERE state = ?`, string(iothub.StateEnqueued))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	return out, rows.Err()
}
