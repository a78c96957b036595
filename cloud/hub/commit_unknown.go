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
// (txid_status of the id c2d_enqueue_3 returned): committed, the send succeeded; aborted, the
// 503 is now true and safe to retry; in progress (its backend has not yet read the COMMIT or the
// end of its connection), asked again. Looking for the message instead would not do: a new
// connection can look before the old backend commits. If the store does not answer within
// resolveBound (or the request ends), the error says the message may be stored and how to find
// out.
func (h *Hub) resolveSend(ctx context.Context, m *msgRow, commitErr error) (iothub.SendResult, error) {
	ctx, cancel := context.WithTimeout(ctx, resolveBound)
	defer cancel()
	h.log.Warn("send: the store did not answer the commit; asking it whether the message was stored",
		"device", m.DeviceID, "message", m.MessageID, "seq", m.Seq, "xid", m.xid, "err", commitErr)
	for delay := 20 * time.Millisecond; m.xid != 0; delay = min(2*delay, time.Second) {
		var st string
		err := h.view(ctx, func(tx storeTx) (err error) {
			st, err = tx.txStatus(m.xid)
			return err
		})
		switch {
		case err == nil && st == "committed":
			h.log.Info("send: the message was stored; answered as sent", "device", m.DeviceID, "message", m.MessageID, "seq", m.Seq)
			if h.ev.Sent != nil {
				h.ev.Sent(m.DeviceID)
			}
			h.kick(m.DeviceID) // the commit's effects never ran (a peer node finds it by its poll)
			return m.sendResult(), nil
		case err == nil && st == "aborted":
			h.log.Info("send: the message was not stored", "device", m.DeviceID, "message", m.MessageID)
			return iothub.SendResult{}, fmt.Errorf("%w (its transaction was rolled back: nothing was stored, send it again)", commitErr)
		case err != nil && !errors.Is(err, ErrStoreUnavailable) && ctx.Err() == nil:
			h.log.Error("send: cannot learn whether the message was stored", "device", m.DeviceID, "message", m.MessageID, "err", err)
			return iothub.SendResult{}, h.commitUnknown(m, commitErr)
		}
		select {
		case <-ctx.Done():
			return iothub.SendResult{}, h.commitUnknown(m, commitErr)
		case <-time.After(delay): // the server's recovery, or its old backend's end: nothing here to wait on
		}
	}
	return iothub.SendResult{}, h.commitUnknown(m, commitErr)
}

// commitUnknown is the answer to a send whose outcome could not be learned.
func (h *Hub) commitUnknown(m *msgRow, commitErr error) error {
	return fmt.Errorf("%w, and did not say within %v whether it was made durable: message %q may have been stored; GET /devices/%s/messages/devicebound/%s tells, before you send it again",
		commitErr, resolveBound, m.MessageID, m.DeviceID, m.MessageID)
}
