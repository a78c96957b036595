package hub

import (
	"cmp"
	"errors"
	"slices"
	"strconv"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// The three writes of every command — enqueue, lock for delivery, settle — each as few
// statements as the engine allows. On PostgreSQL every statement is a round trip made while the
// writer's transaction waits, so each of these is one statement there (data-modifying CTEs, and a
// server-side function for enqueue), where the generic form, which SQLite runs, takes up to four.

// enqueue takes the device's next sequence number and inserts m under it (m.Seq set) when fewer
// than maxPending messages are pending. Otherwise it changes nothing and returns seq 0 with the
// pending count (found false: no such device).
func (t *sqlTx) enqueue(m *msgRow, maxPending int) (int64, int, bool, error) {
	seq, n, found, _, err := t.enqueueFirst(m, maxPending, firstLock{})
	return seq, n, found, err
}

// firstLock is how enqueueFirst may lock a send's message for its first delivery: under a lock
// token of prefix followed by its sequence number, until until, while o holds the device. The
// zero firstLock (no prefix) locks nothing.
type firstLock struct {
	o      owner
	prefix string
	until  time.Time
}

// enqueueFirst is enqueue, except that m goes in locked for its first delivery as l says
// (Invisible, delivery count 1) when o holds the device and none of the device's other messages
// is Enqueued; locked reports it (m itself is left as sent).
func (t *sqlTx) enqueueFirst(m *msgRow, maxPending int, l firstLock) (seq int64, pending int, found, locked bool, err error) {
	if !t.d.fused {
		seq, n, ok, err := t.nextSeq(m.DeviceID, maxPending)
		if err != nil || !ok || seq == 0 {
			return 0, n, ok, false, err
		}
		m.Seq = seq
		if l.prefix == "" {
			return seq, n, true, false, t.insertMessage(m)
		}
		if err := t.checkOwner(m.DeviceID, l.o); errors.Is(err, errFenced) {
			return seq, n, true, false, t.insertMessage(m)
		} else if err != nil {
			return 0, 0, false, false, err
		}
		locked, err := t.insertFirst(m, l.prefix+strconv.FormatInt(seq, 10), l.until)
		return seq, n, true, locked, err
	}
	// One round trip: c2d_enqueue_2 (store_pg.go) locks the device row, then counts, checks the
	// owner and inserts in statements of their own, so the count is exact while concurrent nodes
	// take turns.
	props, err := m.propsJSON()
	if err != nil {
		return 0, 0, false, false, err
	}
	var until any // NULL without a lock
	if l.prefix != "" {
		until = ms(l.until)
	}
	dirty := t.dirty
	var n int
	var xid int64
	err = t.queryRow(`SELECT known, pending, seq, locked, xid FROM c2d_enqueue_3(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		m.DeviceID, maxPending, m.MessageID, m.CorrelationID, m.UserID, string(m.Ack), m.ContentType,
		m.ContentEncoding, props, m.Body, ms(m.EnqueuedAt), ms(m.ExpiresAt), explicitInt(m),
		string(iothub.StateEnqueued), string(iothub.StateInvisible), l.o.node, l.o.epoch, l.prefix,
		until).Scan(&found, &n, &seq, &locked, &xid)
	t.dirty = true // a function call may write
	if err != nil {
		return 0, 0, false, false, err
	}
	if seq == 0 {
		t.dirty = dirty // no such device, or the queue is full: nothing was written, a clean refusal
		return 0, n, found, false, nil
	}
	m.Seq, m.xid = seq, xid
	return seq, n, true, locked, nil
}

// owner is the ownership a write for a device is conditional on in a cluster: node holds the
// device at epoch. The zero owner (one node, no cluster) is no condition.
type owner struct {
	node  string
	epoch int64
}

// checkOwner returns errFenced unless o holds the device (the device's session row stays locked
// until the transaction ends, so the answer holds for the rest of it).
func (t *sqlTx) checkOwner(deviceID string, o owner) error {
	if o.node == "" {
		return nil
	}
	node, epoch, ok, err := t.deviceOwner(deviceID)
	if err != nil {
		return err
	}
	if !ok || node != o.node || epoch != o.epoch {
		return errFenced
	}
	return nil
}

// ownedCTE locks the device's session row if o still holds it: a row in "own", or none.
const ownedCTE = `own AS (SELECT 1 FROM device_sessions WHERE device_id = ? AND node_id = ? AND epoch = ? FOR UPDATE)`

// lockNextOwned is lockNext while o holds the device (errFenced otherwise).
func (t *sqlTx) lockNextOwned(deviceID string, o owner, limit int, until time.Time, prefix string) ([]msgRow, error) {
	if !t.d.fused || o.node == "" {
		if err := t.checkOwner(deviceID, o); err != nil {
			return nil, err
		}
		return t.lockNext(deviceID, limit, until, prefix)
	}
	// As in lockNext, the messages are chosen in a materialized CTE; the session row is locked
	// before them (own), and with it gone (another node took the device) none is chosen.
	dirty := t.dirty
	ms, err := t.queryMsgs(`WITH `+ownedCTE+`,
		next AS MATERIALIZED (SELECT seq FROM messages
			WHERE device_id = ? AND state = ? AND EXISTS (SELECT 1 FROM own) ORDER BY seq LIMIT ? FOR UPDATE)
		UPDATE messages SET state = ?, lock_token = ? || CAST(seq AS TEXT), locked_until = ?,
			delivery_count = delivery_count + 1
		WHERE device_id = ? AND seq IN (SELECT seq FROM next)
		RETURNING `+msgCols,
		deviceID, o.node, o.epoch,
		deviceID, string(iothub.StateEnqueued), limit,
		string(iothub.StateInvisible), prefix, ms(until), deviceID)
	if err != nil {
		return nil, err
	}
	if len(ms) == 0 {
		t.dirty = dirty // it matched nothing, so it changed nothing
		// Nothing to deliver, or not this node's device any more: say which.
		return nil, t.checkOwner(deviceID, o)
	}
	slices.SortFunc(ms, func(a, b msgRow) int { return cmp.Compare(a.Seq, b.Seq) })
	return ms, nil
}

// settleLocked is a complete or reject: while o holds the device, it removes the device's
// message locked under token if it is Invisible and its lock is valid at now, and records its
// outcome (settled table) — takeLocked and insertSettled. It returns the message as settled
// (Outcome, Reason, SettledAt, State set); false when no such lock is valid, errFenced when o
// no longer holds the device. The feedback record is the caller's (Hub.recorded).
func (t *sqlTx) settleLocked(deviceID, token string, now time.Time, o owner, outcome iothub.FeedbackStatus, reason string) (msgRow, bool, error) {
	if !t.d.fused || o.node == "" {
		if err := t.checkOwner(deviceID, o); err != nil {
			return msgRow{}, false, err
		}
		m, ok, err := t.takeLocked(deviceID, token, now)
		if err != nil || !ok {
			return msgRow{}, false, err
		}
		m.Outcome, m.Reason, m.SettledAt, m.State = outcome, reason, now, outcome.Terminal()
		return m, true, t.insertSettled(&m)
	}
	seq, ok := lockSeq(token)
	if !ok {
		return msgRow{}, false, t.checkOwner(deviceID, o)
	}
	dirty := t.dirty
	state := outcome.Terminal()
	rows, err := t.query(`WITH `+ownedCTE+`,
		del AS (DELETE FROM messages WHERE device_id = ? AND seq = ? AND lock_token = ? AND state = ?
			AND locked_until > ? AND EXISTS (SELECT 1 FROM own) RETURNING `+msgCols+`),
		ins AS (INSERT INTO settled (device_id, seq, message_id, correlation_id, ack, properties,
			enqueued_at, expires_at, delivery_count, state, outcome, reason, settled_at)
			SELECT device_id, seq, message_id, correlation_id, ack, properties, enqueued_at,
				expires_at, delivery_count, ?, ?, ?, ? FROM del)
		SELECT `+msgCols+` FROM del`,
		deviceID, o.node, o.epoch,
		deviceID, seq, token, string(iothub.StateInvisible), ms(now),
		string(state), string(outcome), reason, ms(now))
	if err != nil {
		return msgRow{}, false, err
	}
	ms, err := scanMsgs(rows, false) // as takeLocked: a settle has no use for the properties decoded
	if err != nil {
		return msgRow{}, false, err
	}
	if len(ms) == 0 {
		t.dirty = dirty // it matched nothing, so it changed nothing: a clean refusal
		if err := t.checkOwner(deviceID, o); err != nil {
			return msgRow{}, false, err
		}
		return msgRow{}, false, nil
	}
	m := ms[0]
	m.Outcome, m.Reason, m.SettledAt, m.State = outcome, reason, now, state
	return m, true, nil
}
