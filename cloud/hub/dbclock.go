package hub

import (
	"context"
	"time"
)

// The cluster's clock. With a shared store every node decides lock expiry and TTL, so they must
// agree on the time: the hub's clock is the local clock corrected by its offset from the
// database server's clock, measured at Open and every clockInterval (half the round trip of the
// reading is the error bound, well under a millisecond on a LAN). Reading the server for every
// decision would put a round trip into every operation.

const clockInterval = 10 * time.Second

// syncClock measures the store's clock against the local one.
func (h *Hub) syncClock(ctx context.Context) error {
	before := time.Now()
	t, err := h.st.now(ctx)
	if err != nil {
		return err
	}
	rtt := time.Since(before)
	h.skew.Store(int64(t.Sub(before.Add(rtt / 2))))
	return nil
}

func (h *Hub) storeNow() time.Time { return time.Now().Add(time.Duration(h.skew.Load())) }

func (h *Hub) clockLoop() {
	defer h.wg.Done()
	tick := time.NewTicker(clockInterval)
	defer tick.Stop()
	for {
		select {
		case <-h.done:
			return
		case <-tick.C:
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := h.syncClock(ctx); err != nil && !isClosed(err) {
				h.log.Warn("reading the store's clock failed; keeping the last offset", "err", err)
			}
			cancel()
		}
	}
}
