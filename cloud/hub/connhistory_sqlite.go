package hub

// The SQLite side of connHistoryTx (table device_connections, see migrations).

func (t *sqlTx) connHistory() ([]connRecord, error) {
	rows, err := t.query(`SELECT device_id, connected, state_updated_at, last_activity_at, flushed_at FROM device_connections`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []connRecord
	for rows.Next() {
		var r connRecord
		var connected int
		var upd, act, fl int64
		if err := rows.Scan(&r.DeviceID, &connected, &upd, &act, &fl); err != nil {
			return nil, err
		}
		r.Connected, r.StateUpdated, r.LastActivity, r.FlushedAt = connected != 0, fromMs(upd), fromMs(act), fromMs(fl)
		out = append(out, r)
	}
	return out, rows.Err()
}

func (t *sqlTx) saveConnHistory(recs []connRecord) error {
	for _, r := range recs {
		connected := 0
		if r.Connected {
			connected = 1
		}
		if _, err := t.exec(`INSERT INTO device_connections (device_id, connected, state_updated_at, last_activity_at, flushed_at)
			SELECT ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM devices WHERE device_id = ?)
			ON CONFLICT (device_id) DO UPDATE SET connected = excluded.connected,
				state_updated_at = excluded.state_updated_at, last_activity_at = excluded.last_activity_at,
				flushed_at = excluded.flushed_at`,
			r.DeviceID, connected, ms(r.StateUpdated), ms(r.LastActivity), ms(r.FlushedAt), r.DeviceID); err != nil {
			return err
		}
	}
	return nil
}

func (t *sqlTx) deleteConnHistory(deviceID string) error {
	_, err := t.exec(`DELETE FROM device_connections WHERE device_id = ?`, deviceID)
	return err
}
