package hub

import (
	"cmp"
	"database/sql"
	"errors"
	"slices"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
)

func (t *sqlTx) sendInfo(deviceID string) (int64, int, bool, error) {
	var seq int64
	// The device row is locked first: two nodes sending to one device take turns, so each sees
	// the other's sequence number and queue depth.
	err := t.queryRow(`SELECT last_seq FROM devices WHERE device_id = ?`+t.forUpdate(), deviceID).Scan(&seq)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, 0, false, nil
	}
	if err != nil {
		return 0, 0, false, err
	}
	n, err := t.pendingCount(deviceID)
	return seq, n, err == nil, err
}

func (t *sqlTx) setLastSeq(deviceID string, seq int64) error {
	_, err := t.exec(`UPDATE devices SET last_seq = ? WHERE device_id = ?`, seq, deviceID)
	return err
}

func (t *sqlTx) nextSeq(deviceID string, maxPending int) (int64, int, bool, error) {
	if t.d.serial {
		// One writer at a time: the queue cannot change between the count and the update, so
		// one conditional UPDATE … RETURNING does the lookup, the depth check and the increment.
		dirty := t.dirty
		var seq int64
		err := t.queryRow(`UPDATE devices SET last_seq = last_seq + 1 WHERE device_id = ?
			AND (SELECT COUNT(*) FROM messages WHERE device_id = ?) < ? RETURNING last_seq`,
			deviceID, deviceID, maxPending).Scan(&seq)
		if err == nil {
			return seq, 0, true, nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return 0, 0, false, err
		}
		t.dirty = dirty // it matched nothing, so it changed nothing: say why (a refusal)
		_, n, ok, err := t.sendInfo(deviceID)
		return 0, n, ok, err
	}
	// Concurrent writers (PostgreSQL): the device row is locked first, then the count is read in
	// a statement of its own, which sees every message committed before the lock was granted.
	last, n, ok, err := t.sendInfo(deviceID)
	if err != nil || !ok || n >= maxPending {
		return 0, n, ok, err
	}
	if err := t.setLastSeq(deviceID, last+1); err != nil {
		return 0, 0, false, err
	}
	return last + 1, n, true, nil
}

func (t *sqlTx) pendingCount(deviceID string) (int, error) {
	var n int
	err := t.queryRow(`SELECT COUNT(*) FROM messages WHERE device_id = ?`, deviceID).Scan(&n)
	return n, err
}

func (t *sqlTx) pendingCounts() (map[string]int, error) {
	rows, err := t.query(`SELECT device_id, COUNT(*) FROM messages GROUP BY device_id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var id string
		var n int
		if err := rows.Scan(&id, &n); err != nil {
			return nil, err
		}
		out[id] = n
	}
	return out, rows.Err()
}

func (t *sqlTx) insertMessage(m *msgRow) error {
	return t.insertRow(m, iothub.StateEnqueued, 0, "", time.Time{})
}

// insertRow inserts m in the given state and lock (no token: unlocked, lock columns NULL).
func (t *sqlTx) insertRow(m *msgRow, state iothub.MessageState, deliveries int, token string, until time.Time) error {
	props, err := m.propsJSON()
	if err != nil {
		return err
	}
	var tok, lockedUntil any // NULL: lock_token is unique among the locked messages only
	if token != "" {
		tok, lockedUntil = token, ms(until)
	}
	_, err = t.exec(`INSERT INTO messages (device_id, seq, message_id, correlation_id, user_id, ack,
		content_type, content_encoding, properties, body, enqueued_at, expires_at, explicit_expiry,
		state, delivery_count, lock_token, locked_until)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		m.DeviceID, m.Seq, m.MessageID, m.CorrelationID, m.UserID, string(m.Ack), m.ContentType,
		m.ContentEncoding, props, m.Body, ms(m.EnqueuedAt), ms(m.ExpiresAt), explicitInt(m),
		string(state), deliveries, tok, lockedUntil)
	return err
}

// insertFirst inserts m (Enqueued, as insertMessage) unless none of the device's other messages is
// Enqueued: then m goes in locked for its first delivery under token until until (Invisible,
// delivery count 1), and locked reports it. On a serial store it is one statement: the check and
// the insert cannot be separated by another writer.
func (t *sqlTx) insertFirst(m *msgRow, token string, until time.Time) (locked bool, err error) {
	if !t.d.serial {
		// Concurrent writers: the send locked the device row (nextSeq); the check is a statement
		// of its own.
		var waiting bool
		if err := t.queryRow(`SELECT EXISTS (SELECT 1 FROM messages WHERE device_id = ? AND state = ?)`,
			m.DeviceID, string(iothub.StateEnqueued)).Scan(&waiting); err != nil {
			return false, err
		}
		if waiting {
			return false, t.insertMessage(m)
		}
		return true, t.insertRow(m, iothub.StateInvisible, 1, token, until)
	}
	props, err := m.propsJSON()
	if err != nil {
		return false, err
	}
	var count int
	err = t.queryRow(`INSERT INTO messages (device_id, seq, message_id, correlation_id, user_id, ack,
		content_type, content_encoding, properties, body, enqueued_at, expires_at, explicit_expiry,
		state, delivery_count, lock_token, locked_until)
		SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,
			CASE WHEN q.w THEN ? ELSE ? END, CASE WHEN q.w THEN 0 ELSE 1 END,
			CASE WHEN q.w THEN NULL ELSE ? END, CASE WHEN q.w THEN NULL ELSE ? END
		FROM (SELECT EXISTS (SELECT 1 FROM messages WHERE device_id = ? AND state = ?) AS w) AS q
		RETURNING delivery_count`,
		m.DeviceID, m.Seq, m.MessageID, m.CorrelationID, m.UserID, string(m.Ack), m.ContentType,
		m.ContentEncoding, props, m.Body, ms(m.EnqueuedAt), ms(m.ExpiresAt), explicitInt(m),
		string(iothub.StateEnqueued), string(iothub.StateInvisible), token, ms(until),
		m.DeviceID, string(iothub.StateEnqueued)).Scan(&count)
	t.dirty = true
	return count == 1, err
}

func explicitInt(m *msgRow) int {
	if m.ExplicitExpiry {
		return 1
	}
	return 0
}

const msgCols = `device_id, seq, message_id, correlation_id, user_id, ack, content_type,
	content_encoding, properties, body, enqueued_at, expires_at, explicit_expiry, state,
	delivery_count, lock_token, locked_until`

// scanMsgs reads message rows; with decode false their properties are kept as stored (a settle
// only copies them into its outcome: decoding and re-encoding them was a share of the writer's CPU).
func scanMsgs(rows *sql.Rows, decode bool) ([]msgRow, error) {
	defer rows.Close()
	var out []msgRow
	for rows.Next() {
		var m msgRow
		var props string
		var enq, exp int64
		var explicit int
		var tok sql.NullString
		var until sql.NullInt64
		if err := rows.Scan(&m.DeviceID, &m.Seq, &m.MessageID, &m.CorrelationID, &m.UserID, &m.Ack,
			&m.ContentType, &m.ContentEncoding, &props, &m.Body, &enq, &exp, &explicit, &m.State,
			&m.DeliveryCount, &tok, &until); err != nil {
			return nil, err
		}
		m.storedProps = props
		if decode {
			var err error
			if m.Properties, err = unmarshalProps(props); err != nil {
				return nil, err
			}
		}
		m.EnqueuedAt, m.ExpiresAt, m.ExplicitExpiry = fromMs(enq), fromMs(exp), explicit != 0
		m.LockToken, m.LockedUntil = tok.String, fromMs(until.Int64)
		out = append(out, m)
	}
	return out, rows.Err()
}

func (t *sqlTx) queryMsgs(q string, args ...any) ([]msgRow, error) {
	rows, err := t.query(q, args...)
	if err != nil {
		return nil, err
	}
	return scanMsgs(rows, true)
}

func (t *sqlTx) pending(deviceID string) ([]msgRow, error) {
	return t.queryMsgs(`SELECT `+msgCols+` FROM messages WHERE device_id = ? ORDER BY seq`+t.forUpdate(), deviceID)
}

func (t *sqlTx) byToken(deviceID, token string) (msgRow, bool, error) {
	seq, ok := lockSeq(token)
	if !ok {
		return msgRow{}, false, nil
	}
	ms, err := t.queryMsgs(`SELECT `+msgCols+` FROM messages WHERE device_id = ? AND seq = ? AND lock_token = ?`+t.forUpdate(),
		deviceID, seq, token)
	if err != nil || len(ms) == 0 {
		return msgRow{}, false, err
	}
	return ms[0], true, nil
}

func (t *sqlTx) byMessageID(deviceID, messageID string) (msgRow, bool, error) {
	ms, err := t.queryMsgs(`SELECT `+msgCols+` FROM messages WHERE device_id = ? AND message_id = ?
		ORDER BY seq DESC LIMIT 1`, deviceID, messageID)
	if err != nil {
		return msgRow{}, false, err
	}
	var s msgRow
	var props string
	var enq, exp, at int64
	err = t.queryRow(`SELECT device_id, seq, message_id, correlation_id, ack, properties,
		enqueued_at, expires_at, delivery_count, state, outcome, reason, settled_at FROM settled
		WHERE device_id = ? AND message_id = ? ORDER BY seq DESC LIMIT 1`, deviceID, messageID).
		Scan(&s.DeviceID, &s.Seq, &s.MessageID, &s.CorrelationID, &s.Ack, &props, &enq, &exp,
			&s.DeliveryCount, &s.State, &s.Outcome, &s.Reason, &at)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		if len(ms) == 0 {
			return msgRow{}, false, nil
		}
		return ms[0], true, nil
	case err != nil:
		return msgRow{}, false, err
	}
	if len(ms) > 0 && ms[0].Seq > s.Seq {
		return ms[0], true, nil
	}
	if s.Properties, err = unmarshalProps(props); err != nil {
		return msgRow{}, false, err
	}
	s.EnqueuedAt, s.ExpiresAt, s.SettledAt = fromMs(enq), fromMs(exp), fromMs(at)
	return s, true, nil
}

// lockNext: the messages are chosen in a materialized CTE. As a subquery of the UPDATE,
// PostgreSQL may run the SELECT … LIMIT … FOR UPDATE again while updating, and a rerun skips
// the rows just updated and picks the next ones: more than limit locked.
func (t *sqlTx) lockNext(deviceID string, limit int, until time.Time, prefix string) ([]msgRow, error) {
	dirty := t.dirty
	ms, err := t.queryMsgs(`WITH next AS MATERIALIZED (SELECT seq FROM messages
			WHERE device_id = ? AND state = ? ORDER BY seq LIMIT ?`+t.forUpdate()+`)
		UPDATE messages SET state = ?, lock_token = ? || CAST(seq AS TEXT), locked_until = ?,
			delivery_count = delivery_count + 1
		WHERE device_id = ? AND seq IN (SELECT seq FROM next)
		RETURNING `+msgCols,
		deviceID, string(iothub.StateEnqueued), limit,
		string(iothub.StateInvisible), prefix, ms(until), deviceID)
	if err != nil {
		return nil, err
	}
	if len(ms) == 0 {
		t.dirty = dirty // it matched nothing, so it changed nothing
	}
	// RETURNING gives no order.
	slices.SortFunc(ms, func(a, b msgRow) int { return cmp.Compare(a.Seq, b.Seq) })
	return ms, nil
}

func (t *sqlTx) requeue(deviceID string, seq int64) error {
	_, err := t.exec(`UPDATE messages SET state = ?, lock_token = NULL, locked_until = NULL
		WHERE device_id = ? AND seq = ?`, string(iothub.StateEnqueued), deviceID, seq)
	return err
}

func (t *sqlTx) settle(m *msgRow) error {
	if _, err := t.exec(`DELETE FROM messages WHERE device_id = ? AND seq = ?`, m.DeviceID, m.Seq); err != nil {
		return err
	}
	return t.insertSettled(m)
}

func (t *sqlTx) insertSettled(m *msgRow) error {
	props, err := m.propsJSON()
	if err != nil {
		return err
	}
	_, err = t.exec(`INSERT INTO settled (device_id, seq, message_id, correlation_id, ack, properties,
		enqueued_at, expires_at, delivery_count, state, outcome, reason, settled_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		m.DeviceID, m.Seq, m.MessageID, m.CorrelationID, string(m.Ack), props, ms(m.EnqueuedAt),
		ms(m.ExpiresAt), m.DeliveryCount, string(m.State), string(m.Outcome), m.Reason, ms(m.SettledAt))
	return err
}

// takeLocked: DELETE … RETURNING takes the row lock (PostgreSQL) and checks the lock in one
// statement, where a settle used to SELECT … FOR UPDATE and then DELETE.
func (t *sqlTx) takeLocked(deviceID, token string, now time.Time) (msgRow, bool, error) {
	seq, ok := lockSeq(token)
	if !ok {
		return msgRow{}, false, nil
	}
	dirty := t.dirty
	rows, err := t.query(`DELETE FROM messages WHERE device_id = ? AND seq = ? AND lock_token = ? AND state = ?
		AND locked_until > ? RETURNING `+msgCols, deviceID, seq, token, string(iothub.StateInvisible), ms(now))
	if err != nil {
		return msgRow{}, false, err
	}
	ms, err := scanMsgs(rows, false)
	if err != nil {
		return msgRow{}, false, err
	}
	if len(ms) == 0 {
		t.dirty = dirty // it matched nothing, so it changed nothing: a lost lock is a clean refusal
		return msgRow{}, false, nil
	}
	return ms[0], true, nil
}

func (t *sqlTx) lockExpired(now time.Time, limit int) ([]msgRow, error) {
	return t.queryMsgs(`SELECT `+msgCols+` FROM messages WHERE state = ? AND locked_until <= ?
		ORDER BY locked_until LIMIT ?`+t.skipLocked(), string(iothub.StateInvisible), ms(now), limit)
}

// ttlExpired: ordered by (locked_until, expires_at), which for these rows (all NULL) is expires_at,
// so that PostgreSQL reads messages_due in order instead of sorting every expired message.
func (t *sqlTx) ttlExpired(now time.Time, limit int) ([]msgRow, error) {
	return t.queryMsgs(`SELECT `+msgCols+` FROM messages WHERE state = ? AND locked_until IS NULL
		AND expires_at <= ? ORDER BY locked_until, expires_at LIMIT ?`+t.skipLocked(), string(iothub.StateEnqueued), ms(now), limit)
}

func (t *sqlTx) invisible() ([]msgRow, error) {
	return t.queryMsgs(`SELECT `+msgCols+` FROM messages WHERE state = ? ORDER BY device_id, seq`+t.forUpdate(),
		string(iothub.StateInvisible))
}

func (t *sqlTx) minTime(q string, args ...any) (time.Time, error) {
	var v sql.NullInt64
	if err := t.queryRow(q, args...).Scan(&v); err != nil {
		return time.Time{}, err
	}
	return fromMs(v.Int64), nil
}

func (t *sqlTx) nextMessageDeadline() (time.Time, error) {
	lock, err := t.minTime(`SELECT MIN(locked_until) FROM messages WHERE state = ?`, string(iothub.StateInvisible))
	if err != nil {
		return time.Time{}, err
	}
	exp, err := t.minTime(`SELECT MIN(expires_at) FROM messages WHERE state = ? AND locked_until IS NULL`, string(iothub.StateEnqueued))
	if err != nil {
		return time.Time{}, err
	}
	return earliest(lock, exp), nil
}

func (t *sqlTx) pruneSettled(before time.Time) (int64, error) {
	res, err := t.exec(`DELETE FROM settled WHERE settled_at < ?`, ms(before))
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}
