package hub

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
	"github.com/c2d-project/c2d/internal/pgtest"
)

// Two nodes forming feedback batches at the same moment (each node's service receiving, the
// records written on either) make distinct batches: no receive fails, and every record reaches
// exactly one receiver. A batch's id is the highest one plus one, so without the store's batch
// lock two nodes took the same id and one receive failed on the duplicate.
func TestClusterFeedbackBatchesFormedConcurrently(t *testing.T) {
	parallel(t)
	url := pgtest.DB(t)
	open := func(node string) *Hub {
		cfg := testConfig()
		cfg.Store, cfg.NodeID = url, node
		cfg.FeedbackBatchSize, cfg.FeedbackInterval = 1, time.Hour
		return openHub(t, t.TempDir(), cfg)
	}
	a, b := open("a"), open("b")
	mustDevice(t, a, "pi-1")
	ctx := context.Background()
	seen := map[string]int{}
	for round := range 8 {
		const n = 6
		for i := range n {
			mustSend(t, a, "pi-1", iothub.SendRequest{MessageID: fmt.Sprintf("r%d-m%d", round, i), Ack: iothub.AckFull})
		}
		if _, err := a.Purge(ctx, "pi-1"); err != nil { // n Purged records, none batched yet
			t.Fatal(err)
		}
		var mu sync.Mutex
		var wg sync.WaitGroup
		errs := make(chan error, 2*n)
		rctx, done := context.WithTimeout(ctx, waitLimit) // ends when every record of the round is in
		got := 0
		for _, h := range []*Hub{a, b, a, b, a, b} {
			wg.Go(func() {
				for {
					fb, err := h.ReceiveFeedback(rctx)
					if rctx.Err() != nil {
						return // nothing left for this receiver
					}
					if err != nil {
						errs <- fmt.Errorf("node %s: receive: %w", h.Node(), err)
						return
					}
					if err := h.CompleteFeedback(ctx, fb.LockToken); err != nil {
						errs <- fmt.Errorf("node %s: complete: %w", h.Node(), err)
						return
					}
					mu.Lock()
					for _, r := range fb.Records {
						seen[r.OriginalMessageID]++
					}
					if got += len(fb.Records); got >= n {
						done()
					}
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if got < n && rctx.Err() == context.DeadlineExceeded {
			t.Fatalf("round %d: %d of %d records received within %v", round, got, n, waitLimit)
		}
		done()
		close(errs)
		for err := range errs {
			t.Fatalf("round %d: %v", round, err)
		}
		for i := range n {
			if id := fmt.Sprintf("r%d-m%d", round, i); seen[id] != 1 {
				t.Fatalf("record of %s received %d times, want once", id, seen[id])
			}
		}
	}
}

// Forming a batch takes the store's batch lock: a second node's transaction that reads the
// highest batch id while the first node's batch is not yet committed waits for it, and then
// sees it (ids are the highest one plus one: two nodes must never compute the same).
func TestClusterBatchIDWaitsForTheOtherNodesBatch(t *testing.T) {
	parallel(t)
	url := pgtest.DB(t)
	a, b := openNode(t, url, "a"), openNode(t, url, "b")
	db, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := ctxT(t)
	now := a.now()
	mustDevice(t, a, "pi-1")

	seen := make(chan int64, 1)
	bErr := make(chan error, 1)
	err = a.st.update(ctx, func(tx storeTx) error {
		rec := iothub.FeedbackRecord{DeviceID: "pi-1", OriginalMessageID: "m1", StatusCode: iothub.StatusPurged, EnqueuedTimeUTC: now}
		if err := tx.insertRecord(rec, now); err != nil {
			return err
		}
		id, err := tx.maxBatchID()
		if err != nil {
			return err
		}
		if _, err := tx.formBatch(batchRow{ID: id + 1, EnqueuedAt: now, ExpiresAt: now.Add(time.Hour)}, 1); err != nil {
			return err
		}
		go func() {
			bErr <- b.st.update(ctx, func(tx storeTx) error {
				id, err := tx.maxBatchID()
				if err == nil {
					seen <- id
				}
				return err
			})
		}()
		// b either waits for a lock (as it must) or has read the id already (the defect).
		for {
			var waiting int
			if err := db.QueryRowContext(ctx, `SELECT count(*) FROM pg_stat_activity
				WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%pg_advisory_xact_lock%'`).Scan(&waiting); err != nil {
				return err
			}
			if waiting > 0 || len(seen) > 0 {
				return nil
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("b neither waited nor read: %w", ctx.Err())
			case <-time.After(5 * time.Millisecond): // polling pg_stat_activity
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	// a's batch id (highest + 1) is committed: the only id b may see is it.
	var committed int64
	if err := db.QueryRowContext(ctx, `SELECT MAX(id) FROM feedback_batches`).Scan(&committed); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-bErr:
		if err != nil {
			t.Fatalf("node b's transaction: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("node b's transaction never ended")
	}
	if id := <-seen; id != committed {
		t.Fatalf("node b read highest batch id %d while node a was forming %d; want it to wait and see %d", id, committed, committed)
	}
}
