package hub

import (
	"context"
	"errors"
	"testing"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// A one-statement write (updateOne) has an update's outcome on both stores: what it wrote is
// durable once it returns, and a refusal it returns writes nothing. On PostgreSQL, alone in its
// writer, it runs without a transaction; there a second statement is refused, not run outside
// the transaction it would need.
func TestStoreUpdateOne(t *testing.T) {
	eachStore(t, func(t *testing.T, st store, reopen func() store) {
		up(t, st, func(tx storeTx) error {
			return tx.insertDevice(deviceRow{ID: "d", Status: iothub.DeviceEnabled, UpdatedAt: at(0)})
		})
		enqueue := func(max int) error {
			return st.updateOne(context.Background(), "d", func(tx storeTx) error {
				m := testMsg("d", 0)
				seq, _, _, err := tx.enqueue(&m, max)
				if err == nil && seq == 0 {
					return coded(ErrQueueFull, iothub.CodeDeviceMaximumQueueDepthExceeded, "full")
				}
				return err
			})
		}
		if err := enqueue(1); err != nil {
			t.Fatalf("updateOne: %v", err)
		}
		if err := enqueue(1); !errors.Is(err, ErrQueueFull) {
			t.Fatalf("updateOne on a full queue = %v, want ErrQueueFull", err)
		}
		first := st.(*sqlStore)
		if first.d.fused && first.alone.Load() != 1 {
			t.Fatalf("%d writes ran alone, want the one that wrote", first.alone.Load())
		}
		st = reopen()
		see(t, st, func(tx storeTx) error {
			ms, err := tx.pending("d")
			if err != nil || len(ms) != 1 || ms[0].Seq != 1 {
				t.Fatalf("pending after a write and a refusal: %+v, %v; want the one message, seq 1", ms, err)
			}
			if d, _, _ := tx.device("d"); d.LastSeq != 1 {
				t.Fatalf("last_seq %d, want 1 (the refusal took no number)", d.LastSeq)
			}
			return nil
		})
		s := st.(*sqlStore)
		if !s.d.fused {
			return
		}
		err := s.updateOne(context.Background(), "d", func(tx storeTx) error {
			if _, _, err := tx.device("d"); err != nil {
				return err
			}
			_, _, err := tx.device("d")
			return err
		})
		if !errors.Is(err, errNotOneStatement) {
			t.Fatalf("a second statement alone = %v, want errNotOneStatement", err)
		}
	})
}
