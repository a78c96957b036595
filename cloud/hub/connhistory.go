package hub

import (
	"context"
	"time"
)

// Connection history: when each device last connected or disconnected and when it was last active
// (Azure's connectionStateUpdatedTime and lastActivityTime), kept across restarts. The live state
// is in memory (h.conns, h.activity: updated on every attach, detach and settle); a flusher writes
// what changed since its last pass every connHistoryFlush, in one transaction, so the history costs
// no write per message, and once more when the hub closes. After kill -9 up to one interval of
// history is lost — never a message (this is display state, not the queue's).
const connHistoryFlush = 10 * time.Second

// connRecord is one device's stored history.
type connRecord struct {
	DeviceID     string
	Connected    bool
	StateUpdated time.Time // when Connected last changed
	LastActivity time.Time
	FlushedAt    time.Time // when this record was last written (the device was there then)
}

// connHistoryTx is the store's part of the history (see storeTx).
type connHistoryTx interface {
	// connHistory returns every stored record.
	connHistory() ([]connRecord, error)
	// saveConnHistory upserts records of devices that are still registered (a device deleted
	// meanwhile gets no record).
	saveConnHistory(recs []connRecord) error
	// deleteConnHistory removes a device's record (with the device).
	deleteConnHistory(deviceID string) error
}

// loadConnHistory fills the in-memory state from the store at Open. No connection survives a
// restart: a device stored as connected (the hub was killed) is shown disconnected since the last
// moment it was known to be there.
func (h *Hub) loadConnHistory(ctx context.Context) error {
	var recs []connRecord
	if err := h.st.view(ctx, func(tx storeTx) error {
		var err error
		recs, err = tx.connHistory()
		return err
	}); err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.flushed = make(map[string]connRecord, len(recs))
	for _, r := range recs {
		if r.Connected {
			r.Connected = false
			r.StateUpdated = latest(r.LastActivity, r.FlushedAt, r.StateUpdated)
		}
		h.conns[r.DeviceID] = connInfo{connected: false, updated: r.StateUpdated}
		if !r.LastActivity.IsZero() {
			h.activity[r.DeviceID] = r.LastActivity
		}
		h.flushed[r.DeviceID] = r
	}
	return nil
}

func latest(ts ...time.Time) time.Time {
	var m time.Time
	for _, t := range ts {
		if t.After(m) {
			m = t
		}
	}
	return m
}

// runConnHistory is the flusher goroutine.
func (h *Hub) runConnHistory() {
	defer h.wg.Done()
	t := time.NewTicker(connHistoryFlush)
	defer t.Stop()
	for {
		select {
		case <-h.done:
			h.flushConnHistory() // the store closes after every goroutine returned
			return
		case <-t.C:
			h.flushConnHistory()
		}
	}
}

// flushConnHistory writes the records that changed since the last flush.
func (h *Hub) flushConnHistory() {
	now := h.now()
	h.mu.Lock()
	var recs []connRecord
	for id, ci := range h.conns {
		r := connRecord{DeviceID: id, Connected: ci.connected, StateUpdated: ci.updated, LastActivity: h.activity[id], FlushedAt: now}
		if old, ok := h.flushed[id]; ok && old.Connected == r.Connected && old.StateUpdated.Equal(r.StateUpdated) &&
			old.LastActivity.Equal(r.LastActivity) {
			continue // unchanged: an idle fleet costs no writes
		}
		recs = append(recs, r)
	}
	h.mu.Unlock()
	if len(recs) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := h.st.update(ctx, func(tx storeTx) error { return tx.saveConnHistory(recs) })
	if err != nil {
		h.log.Warn("saving connection history failed; retrying at the next flush", "devices", len(recs), "err", err)
		return
	}
	h.mu.Lock()
	for _, r := range recs {
		if _, ok := h.conns[r.DeviceID]; ok { // not deleted meanwhile
			h.flushed[r.DeviceID] = r
		}
	}
	h.mu.Unlock()
}
