package hub

import (
	"database/sql"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
)

func (t *sqlTx) insertRecord(r iothub.FeedbackRecord, createdAt time.Time) error {
	_, err := t.exec(`INSERT INTO feedback_records (batch_id, device_id, original_message_id,
		generation_id, enqueued_at, status, description, reason, delivery_count, correlation_id, created_at)
		VALUES (NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		r.DeviceID, r.OriginalMessageID, r.DeviceGenerationID, ms(r.EnqueuedTimeUTC), string(r.StatusCode),
		r.Description, r.Reason, r.DeliveryCount, r.CorrelationID, ms(createdAt))
	return err
}

func (t *sqlTx) unbatched() (int, time.Time, error) {
	var n int
	var oldest sql.NullInt64
	err := t.queryRow(`SELECT COUNT(*), MIN(created_at) FROM feedback_records WHERE batch_id IS NULL`).
		Scan(&n, &oldest)
	return n, fromMs(oldest.Int64), err
}

func (t *sqlTx) maxBatchID() (int64, error) {
	if t.write && t.d.batchLock != "" {
		if _, err := t.exec(t.d.batchLock); err != nil {
			return 0, err
		}
	}
	var v sql.NullInt64
	err := t.queryRow(`SELECT MAX(id) FROM feedback_batches`).Scan(&v)
	return v.Int64, err
}

func (t *sqlTx) formBatch(b batchRow, limit int) (int, error) {
	if _, err := t.exec(`INSERT INTO feedback_batches (id, enqueued_at, expires_at, delivery_count,
		lock_token, locked_until) VALUES (?, ?, ?, 0, NULL, NULL)`, b.ID, ms(b.EnqueuedAt), ms(b.ExpiresAt)); err != nil {
		return 0, err
	}
	res, err := t.exec(`UPDATE feedback_records SET batch_id = ? WHERE id IN
		(SELECT id FROM feedback_records WHERE batch_id IS NULL ORDER BY id LIMIT ?)`, b.ID, limit)
	if err != nil {
		return 0, err
	}
	n, err := res.RowsAffected()
	if err != nil || n > 0 {
		return int(n), err
	}
	// Nothing left to batch: the count the caller formed from was read before the batch lock
	// (another node batched those records meanwhile). An empty batch would be received as a batch
	// with no records.
	_, err = t.exec(`DELETE FROM feedback_batches WHERE id = ?`, b.ID)
	return 0, err
}

const batchCols = `id, enqueued_at, expires_at, delivery_count, lock_token, locked_until`

func (t *sqlTx) queryBatches(q string, args ...any) ([]batchRow, error) {
	rows, err := t.query(q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []batchRow
	for rows.Next() {
		var b batchRow
		var enq, exp int64
		var tok sql.NullString
		var until sql.NullInt64
		if err := rows.Scan(&b.ID, &enq, &exp, &b.DeliveryCount, &tok, &until); err != nil {
			return nil, err
		}
		b.EnqueuedAt, b.ExpiresAt, b.LockToken, b.LockedUntil = fromMs(enq), fromMs(exp), tok.String, fromMs(until.Int64)
		out = append(out, b)
	}
	return out, rows.Err()
}

func (t *sqlTx) availableBatch(now time.Time) (batchRow, bool, error) {
	bs, err := t.queryBatches(`SELECT `+batchCols+` FROM feedback_batches
		WHERE lock_token IS NULL AND expires_at > ? ORDER BY id LIMIT 1`+t.skipLocked(), ms(now))
	if err != nil || len(bs) == 0 {
		return batchRow{}, false, err
	}
	return bs[0], true, nil
}

func (t *sqlTx) batchByToken(token string) (batchRow, bool, error) {
	bs, err := t.queryBatches(`SELECT `+batchCols+` FROM feedback_batches WHERE lock_token = ?`+t.forUpdate(), token)
	if err != nil || len(bs) == 0 {
		return batchRow{}, false, err
	}
	return bs[0], true, nil
}

func (t *sqlTx) batchRecords(id int64) ([]iothub.FeedbackRecord, error) {
	rows, err := t.query(`SELECT device_id, original_message_id, generation_id,
		enqueued_at, status, description, reason, delivery_count, correlation_id
		FROM feedback_records WHERE batch_id = ? ORDER BY id`, id)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []iothub.FeedbackRecord{}
	for rows.Next() {
		var r iothub.FeedbackRecord
		var enq int64
		if err := rows.Scan(&r.DeviceID, &r.OriginalMessageID, &r.DeviceGenerationID, &enq, &r.StatusCode,
			&r.Description, &r.Reason, &r.DeliveryCount, &r.CorrelationID); err != nil {
			return nil, err
		}
		r.EnqueuedTimeUTC = fromMs(enq)
		out = append(out, r)
	}
	return out, rows.Err()
}

func (t *sqlTx) lockBatch(id int64, token string, until time.Time, deliveryCount int) error {
	_, err := t.exec(`UPDATE feedback_batches SET lock_token = ?, locked_until = ?, delivery_count = ?
		WHERE id = ?`, token, ms(until), deliveryCount, id)
	return err
}

func (t *sqlTx) unlockBatch(id int64) error {
	_, err := t.exec(`UPDATE feedback_batches SET lock_token = NULL, locked_until = NULL WHERE id = ?`, id)
	return err
}

func (t *sqlTx) deleteBatch(id int64) error {
	if _, err := t.exec(`DELETE FROM feedback_records WHERE batch_id = ?`, id); err != nil {
		return err
	}
	_, err := t.exec(`DELETE FROM feedback_batches WHERE id = ?`, id)
	return err
}

func (t *sqlTx) lockExpiredBatches(now time.Time) ([]batchRow, error) {
	return t.queryBatches(`SELECT `+batchCols+` FROM feedback_batches
		WHERE lock_token IS NOT NULL AND locked_until <= ? ORDER BY id`+t.skipLocked(), ms(now))
}

func (t *sqlTx) expiredBatches(now time.Time) ([]int64, error) {
	bs, err := t.queryBatches(`SELECT `+batchCols+` FROM feedback_batches
		WHERE lock_token IS NULL AND expires_at <= ? ORDER BY id`+t.skipLocked(), ms(now))
	ids := make([]int64, len(bs))
	for i, b := range bs {
		ids[i] = b.ID
	}
	return ids, err
}

func (t *sqlTx) nextBatchDeadline() (time.Time, error) {
	lock, err := t.minTime(`SELECT MIN(locked_until) FROM feedback_batches WHERE lock_token IS NOT NULL`)
	if err != nil {
		return time.Time{}, err
	}
	exp, err := t.minTime(`SELECT MIN(expires_at) FROM feedback_batches WHERE lock_token IS NULL`)
	if err != nil {
		return time.Time{}, err
	}
	return earliest(lock, exp), nil
}

func (t *sqlTx) unlockAllBatches() (int64, error) {
	res, err := t.exec(`UPDATE feedback_batches SET lock_token = NULL, locked_until = NULL WHERE lock_token IS NOT NULL`)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (t *sqlTx) pendingFeedback() (int, error) {
	var n int
	err := t.queryRow(`SELECT COUNT(*) FROM feedback_records`).Scan(&n)
	return n, err
}
