package hub

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// resolveBound is how long a send whose commit went unanswered waits for the store to answer
// again and say whether the message is there. PostgreSQL restarted with `pg_ctl stop -m
// immediate` answers again within a few seconds; a sender (Azure's SDKs: 60 s) waits longer.
const resolveBound = 30 * time.Second

// resolveSend answers a send whose COMMIT lost its connection: the server may have made it
// durable before the connection went, or not. Answering ServiceUnavailable either way would make
// a sender that retries (as it should after a 503) queue the command twice when it was stored —
// a board would carry it out twice under two message ids, and nothing on the board could tell.
// So the server is asked, as soon as it answers again, what became of the send's transaction
// (txid_status of the id c2d_enqueue_3 returned) and whether the message is at its sequence
// number; sendStored decides. Still undecided within resolveBound (or when the request ends),
// the error says the message may be stored and how to find out.
func (h *Hub) resolveSend(ctx context.Context, m *msgRow, commitErr error) (iothub.SendResult, error) {
	ctx, cancel := context.WithTimeout(ctx, resolveBound)
	defer cancel()
	h.log.Warn("send: the store did not answer the commit; asking it whether the message was stored",
		"device", m.DeviceID, "message", m.MessageID, "seq", m.Seq, "xid", m.xid, "err", commitErr)
	for delay := 20 * time.Millisecond; m.xid != 0; delay = min(2*delay, time.Second) {
		var txSt string
		var row msgRow
		var found bool
		err := h.view(ctx, func(tx storeTx) (err error) {
			txSt, err = tx.txStatus(m.xid)
			return err
		})
		if err == nil && txSt == txCommitted {
			// In a transaction of its own: one whose snapshot was taken before the commit
			// would not see the message even though the commit is known.
			err = h.view(ctx, func(tx storeTx) (err error) {
				row, found, err = tx.byMessageID(m.DeviceID, m.MessageID)
				return err
			})
		}
		if err != nil && !errors.Is(err, ErrStoreUnavailable) && ctx.Err() == nil {
			h.log.Error("send: cannot learn whether the message was stored", "device", m.DeviceID, "message", m.MessageID, "err", err)
			return iothub.SendResult{}, h.commitUnknown(m, commitErr)
		}
		if err == nil {
			stored, decided := sendStored(txSt, found, row.Seq, m.Seq)
			h.log.Warn("send: what the store says of the unanswered commit", "device", m.DeviceID, "message", m.MessageID,
				"seq", m.Seq, "xid", m.xid, "transaction", txSt, "found_at_seq", row.Seq, "stored", stored, "decided", decided)
			switch {
			case decided && stored:
				if h.ev.Sent != nil {
					h.ev.Sent(m.DeviceID)
				}
				h.kick(m.DeviceID) // the commit's effects never ran (a peer node finds it by its poll)
				return m.sendResult(), nil
			case decided:
				return iothub.SendResult{}, fmt.Errorf("%w (it was not made durable: nothing was stored, send it again)", commitErr)
			case txSt != txInProgress:
				return iothub.SendResult{}, h.commitUnknown(m, commitErr)
			}
		}
		select {
		case <-ctx.Done():
			return iothub.SendResult{}, h.commitUnknown(m, commitErr)
		case <-time.After(delay): // the server's recovery, or its old backend's end: nothing here to wait on
		}
	}
	return iothub.SendResult{}, h.commitUnknown(m, commitErr)
}

// sendStored decides whether a send whose COMMIT went unanswered was stored, from the outcome
// of its transaction (txStatus) and the newest message with its id (found, at sequence number
// rowSeq; the send's own is seq). Undecided while the transaction is in progress (its backend
// has not yet read the COMMIT or the end of its connection: a new connection could look first).
// "committed" is not enough: after a crash, a transaction id that nothing durable used is handed
// out again, and another transaction may have committed under it, so the message must also be
// at its sequence number. A sequence number of its own taken over likewise (the crash undid the
// increment) holds another message, with another id. A newer message with the same id (a
// sender that already retried) hides whether this one is there: undecided too.
func sendStored(txStatus string, found bool, rowSeq, seq int64) (stored, decided bool) {
	switch txStatus {
	case txAborted, txFuture:
		return false, true
	case txCommitted:
		switch {
		case found && rowSeq == seq:
			return true, true
		case found && rowSeq > seq:
			return false, false
		}
		return false, true
	}
	return false, false
}

// commitUnknown is the answer to a send whose outcome could not be learned.
func (h *Hub) commitUnknown(m *msgRow, commitErr error) error {
	return fmt.Errorf("%w, and did not say within %v whether it was made durable: message %q may have been stored; GET /devices/%s/messages/devicebound/%s tells, before you send it again",
		commitErr, resolveBound, m.MessageID, m.DeviceID, m.MessageID)
}
