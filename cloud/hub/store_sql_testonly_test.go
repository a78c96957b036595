package hub

import (
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// What the conformance tests use to set up and inspect a queue directly; the hub itself locks
// with lockNext and reads with pending, so these are not part of storeTx.

// sqlOf is the SQL transaction behind tx (both stores are one SQL with a dialect).
func sqlOf(tx storeTx) *sqlTx { return tx.(*sqlTx) }

func (t *sqlTx) enqueued(deviceID string, limit int) ([]msgRow, error) {
	return t.queryMsgs(`SELECT `+msgCols+` FROM messages WHERE device_id = ? AND state = ?
		ORDER BY seq LIMIT ?`+t.forUpdate(), deviceID, string(iothub.StateEnqueued), limit)
}

func (t *sqlTx) setLock(deviceID string, seq int64, token string, until time.Time, deliveryCount int) error {
	_, err := t.exec(`UPDATE messages SET state = ?, lock_token = ?, locked_until = ?, delivery_count = ?
		WHERE device_id = ? AND seq = ?`, string(iothub.StateInvisible), token, ms(until), deliveryCount, deviceID, seq)
	return err
}
