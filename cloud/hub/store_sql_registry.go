package hub

import (
	"database/sql"
	"errors"
)

func (t *sqlTx) device(id string) (deviceRow, bool, error) {
	var d deviceRow
	var upd int64
	err := t.queryRow(`SELECT device_id, generation_id, etag, status, status_reason,
		primary_key, secondary_key, last_seq, updated_at FROM devices WHERE device_id = ?`+t.forUpdate(), id).
		Scan(&d.ID, &d.GenerationID, &d.ETag, &d.Status, &d.StatusReason, &d.PrimaryKey, &d.SecondaryKey, &d.LastSeq, &upd)
	if errors.Is(err, sql.ErrNoRows) {
		return d, false, nil
	}
	d.UpdatedAt = fromMs(upd)
	return d, err == nil, err
}

func (t *sqlTx) devices() ([]deviceRow, error) {
	rows, err := t.query(`SELECT device_id, generation_id, etag, status, status_reason,
		primary_key, secondary_key, last_seq, updated_at FROM devices ORDER BY device_id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []deviceRow
	for rows.Next() {
		var d deviceRow
		var upd int64
		if err := rows.Scan(&d.ID, &d.GenerationID, &d.ETag, &d.Status, &d.StatusReason, &d.PrimaryKey, &d.SecondaryKey, &d.LastSeq, &upd); err != nil {
			return nil, err
		}
		d.UpdatedAt = fromMs(upd)
		out = append(out, d)
	}
	return out, rows.Err()
}

func (t *sqlTx) insertDevice(d deviceRow) error {
	_, err := t.exec(`INSERT INTO devices (device_id, generation_id, etag, status, status_reason,
		primary_key, secondary_key, last_seq, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		d.ID, d.GenerationID, d.ETag, string(d.Status), d.StatusReason, d.PrimaryKey, d.SecondaryKey, d.LastSeq, ms(d.UpdatedAt))
	return err
}

func (t *sqlTx) updateDevice(d deviceRow) error {
	_, err := t.exec(`UPDATE devices SET generation_id = ?, etag = ?, status = ?, status_reason = ?,
		primary_key = ?, secondary_key = ?, last_seq = ?, updated_at = ? WHERE device_id = ?`,
		d.GenerationID, d.ETag, string(d.Status), d.StatusReason, d.PrimaryKey, d.SecondaryKey, d.LastSeq, ms(d.UpdatedAt), d.ID)
	return err
}

func (t *sqlTx) deleteDevice(id string) error {
	for _, q := range []string{
		`DELETE FROM messages WHERE device_id = ?`,
		`DELETE FROM settled WHERE device_id = ?`,
		`DELETE FROM feedback_records WHERE device_id = ?`,
		`DELETE FROM devices WHERE device_id = ?`,
	} {
		if _, err := t.exec(q, id); err != nil {
			return err
		}
	}
	// Batches that held only this device's records are gone with them.
	_, err := t.exec(`DELETE FROM feedback_batches WHERE NOT EXISTS
		(SELECT 1 FROM feedback_records r WHERE r.batch_id = feedback_batches.id)`)
	return err
}

func (t *sqlTx) policies() ([]Policy, error) {
	rows, err := t.query(`SELECT name, primary_key, secondary_key, rights FROM policies ORDER BY name`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Policy
	for rows.Next() {
		var p Policy
		var rights string
		if err := rows.Scan(&p.Name, &p.PrimaryKey, &p.SecondaryKey, &rights); err != nil {
			return nil, err
		}
		p.Rights = parseRights(rights)
		out = append(out, p)
	}
	return out, rows.Err()
}

func (t *sqlTx) insertPolicy(p Policy) error {
	_, err := t.exec(`INSERT INTO policies (name, primary_key, secondary_key, rights) VALUES (?, ?, ?, ?)`,
		p.Name, p.PrimaryKey, p.SecondaryKey, formatRights(p.Rights))
	return err
}

func (t *sqlTx) updatePolicyKeys(name, primaryKey, secondaryKey string) error {
	_, err := t.exec(`UPDATE policies SET primary_key = ?, secondary_key = ? WHERE name = ?`, primaryKey, secondaryKey, name)
	return err
}
