package hub

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// enqueue numbers and stores a message while the queue has room, and changes nothing when it is
// full or the device unknown.
func TestStoreEnqueue(t *testing.T) {
	eachStore(t, func(t *testing.T, st store, _ func() store) {
		up(t, st, func(tx storeTx) error {
			return tx.insertDevice(deviceRow{ID: "d", Status: iothub.DeviceEnabled, LastSeq: 40, UpdatedAt: at(0)})
		})
		for i := int64(1); i <= 3; i++ {
			up(t, st, func(tx storeTx) error {
				m := testMsg("d", 0)
				seq, _, ok, err := tx.enqueue(&m, 3)
				if err != nil || !ok || seq != 40+i || m.Seq != seq {
					return fmt.Errorf("enqueue %d = %d (m.Seq %d), %v, %v; want %d", i, seq, m.Seq, ok, err, 40+i)
				}
				return nil
			})
		}
		up(t, st, func(tx storeTx) error {
			m := testMsg("d", 0)
			if seq, n, ok, err := tx.enqueue(&m, 3); err != nil || !ok || seq != 0 || n != 3 {
				return fmt.Errorf("enqueue on a full queue = %d, %d, %v, %v; want 0, 3 pending", seq, n, ok, err)
			}
			m = testMsg("nope", 0)
			if seq, _, ok, err := tx.enqueue(&m, 3); err != nil || ok || seq != 0 {
				return fmt.Errorf("enqueue to an unknown device = %d, %v, %v", seq, ok, err)
			}
			m = testMsg("d", 0)
			if seq, _, ok, err := tx.enqueue(&m, 4); err != nil || !ok || seq != 44 {
				return fmt.Errorf("enqueue with room again = %d, %v, %v; want 44 (the refusal took no number)", seq, ok, err)
			}
			return nil
		})
		see(t, st, func(tx storeTx) error {
			ms, err := tx.pending("d")
			if err != nil || len(ms) != 4 {
				t.Fatalf("pending after the enqueues: %d, %v", len(ms), err)
			}
			for i, m := range ms {
				w := testMsg("d", 0)
				w.Seq = int64(41 + i)
				sameMsg(t, fmt.Sprintf("message %d as stored", i), m, w)
			}
			if d, _, _ := tx.device("d"); d.LastSeq != 44 {
				t.Fatalf("last_seq %d, want 44", d.LastSeq)
			}
			return nil
		})
	})
}

// Two nodes enqueueing to one device at once never exceed its queue depth, and every message
// gets its own number (PostgreSQL: two stores on one database are two nodes).
func TestStoreEnqueueConcurrentNodes(t *testing.T) {
	open := storeKinds[1].newOpen(t)
	var nodes []store
	for range 2 {
		st, err := open()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.close() })
		nodes = append(nodes, st)
	}
	up(t, nodes[0], func(tx storeTx) error {
		return tx.insertDevice(deviceRow{ID: "d", Status: iothub.DeviceEnabled, UpdatedAt: at(0)})
	})
	const depth, each = 30, 40
	var wg sync.WaitGroup
	var mu sync.Mutex
	seqs := map[int64]bool{}
	refused := 0
	for _, st := range nodes {
		for range each {
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := st.updateFor(context.Background(), "d", func(tx storeTx) error {
					m := testMsg("d", 0)
					seq, _, _, err := tx.enqueue(&m, depth)
					if err == nil {
						mu.Lock()
						if seq == 0 {
							refused++
						} else if seqs[seq] {
							err = fmt.Errorf("sequence number %d given twice", seq)
						} else {
							seqs[seq] = true
						}
						mu.Unlock()
					}
					return err
				})
				if err != nil {
					t.Error(err)
				}
			}()
		}
	}
	wg.Wait()
	see(t, nodes[1], func(tx storeTx) error {
		n, err := tx.pendingCount("d")
		if err != nil || n != depth || len(seqs) != depth || refused != 2*each-depth {
			t.Fatalf("%d pending (%v), %d numbers given, %d refused; want %d, %d, %d", n, err, len(seqs), refused, depth, depth, 2*each-depth)
		}
		return nil
	})
}

// lockNextOwned and settleLocked write only while the node holds the device at its epoch; a
// stale epoch or another node changes nothing and answers errFenced.
func TestStoreOwnedWrites(t *testing.T) {
	eachStore(t, func(t *testing.T, st store, _ func() store) {
		epoch := claimedWithMessages(t, st, 4)
		me := owner{node: "n1", epoch: epoch}
		until := at(time.Minute)
		for _, o := range []owner{{node: "n1", epoch: epoch - 1}, {node: "n1", epoch: epoch + 1}, {node: "n2", epoch: epoch}} {
			up(t, st, func(tx storeTx) error {
				if ms, err := tx.lockNextOwned("d", o, 2, until, testPrefix("x")); !errors.Is(err, errFenced) || len(ms) != 0 {
					return fmt.Errorf("lockNextOwned as %+v = %d messages, %v; want errFenced", o, len(ms), err)
				}
				return nil
			})
		}
		var locked []msgRow
		up(t, st, func(tx storeTx) error {
			var err error
			locked, err = tx.lockNextOwned("d", me, 2, until, testPrefix("p"))
			if err != nil || len(locked) != 2 || locked[0].Seq != 1 || locked[1].Seq != 2 || locked[0].LockToken != testToken("p", 1) {
				return fmt.Errorf("lockNextOwned as the owner = %+v, %v", locked, err)
			}
			// The zero owner (one node) is no condition.
			ms, err := tx.lockNextOwned("d", owner{}, 1, until, testPrefix("q"))
			if err != nil || len(ms) != 1 || ms[0].Seq != 3 {
				return fmt.Errorf("lockNextOwned without an owner = %+v, %v", ms, err)
			}
			return nil
		})
		up(t, st, func(tx storeTx) error {
			ms, err := tx.lockNextOwned("d", me, 1, until, testPrefix("r"))
			if err != nil || len(ms) != 1 || ms[0].Seq != 4 {
				return fmt.Errorf("lockNextOwned of the last = %+v, %v", ms, err)
			}
			if ms, err := tx.lockNextOwned("d", me, 1, until, testPrefix("s")); err != nil || len(ms) != 0 {
				return fmt.Errorf("lockNextOwned with nothing enqueued = %+v, %v; want nothing, no error", ms, err)
			}
			return nil
		})
		now := at(30 * time.Second)
		up(t, st, func(tx storeTx) error {
			if _, ok, err := tx.settleLocked("d", testToken("p", 1), now, owner{node: "n2", epoch: epoch}, iothub.StatusSuccess, ""); !errors.Is(err, errFenced) || ok {
				return fmt.Errorf("settleLocked as another node = %v, %v; want errFenced", ok, err)
			}
			if _, ok, err := tx.settleLocked("d", "nope", now, owner{node: "n2", epoch: epoch}, iothub.StatusSuccess, ""); !errors.Is(err, errFenced) || ok {
				return fmt.Errorf("settleLocked of an unknown token as another node = %v, %v; want errFenced", ok, err)
			}
			for _, tok := range []string{"nope", testToken("x", 1), testToken("p", 3)} {
				if _, ok, err := tx.settleLocked("d", tok, now, me, iothub.StatusSuccess, ""); err != nil || ok {
					return fmt.Errorf("settleLocked of unknown token %q = %v, %v", tok, ok, err)
				}
			}
			if _, ok, err := tx.settleLocked("d", testToken("p", 1), until, me, iothub.StatusSuccess, ""); err != nil || ok {
				return fmt.Errorf("settleLocked when the lock ran out = %v, %v", ok, err)
			}
			return nil
		})
		var got msgRow
		up(t, st, func(tx storeTx) error {
			var ok bool
			var err error
			got, ok, err = tx.settleLocked("d", testToken("p", 2), now, me, iothub.StatusRejected, "bad pin")
			if err != nil || !ok {
				return fmt.Errorf("settleLocked as the owner = %v, %v", ok, err)
			}
			return nil
		})
		w := locked[1]
		w.Outcome, w.Reason, w.SettledAt, w.State = iothub.StatusRejected, "bad pin", now, iothub.StateDeadLettered
		sameMsg(t, "the settled message", got, w)
		see(t, st, func(tx storeTx) error {
			if m, ok, _ := tx.byToken("d", testToken("p", 2)); ok {
				t.Fatalf("a settled message is still pending: %+v", m)
			}
			if m, ok, _ := tx.byToken("d", testToken("p", 1)); !ok || m.State != iothub.StateInvisible {
				t.Fatalf("the refused settles changed p1: %+v, %v", m, ok)
			}
			s, ok, err := tx.byMessageID("d", "m2")
			if err != nil || !ok || s.Outcome != iothub.StatusRejected || s.Reason != "bad pin" || s.State != iothub.StateDeadLettered ||
				!s.SettledAt.Equal(now) || s.DeliveryCount != 1 || len(s.Properties) != 2 {
				t.Fatalf("the settled outcome as stored: %+v, %v, %v", s, ok, err)
			}
			return nil
		})
	})
}

// A settle reads the sequence number out of the token (lockSeq) to find the message by its
// primary key, so the token's layout is part of the schema.
func TestLockSeqReadsTheTokensLayout(t *testing.T) {
	p := newLockPrefix()
	if len(p) != lockPrefixLen {
		t.Fatalf("a lock prefix has %d characters; lockSeq skips %d", len(p), lockPrefixLen)
	}
	if seq, ok := lockSeq(p + "9223372036854775807"); !ok || seq != 9223372036854775807 {
		t.Fatalf("lockSeq(prefix + max int64) = %d, %v", seq, ok)
	}
	if seq, ok := lockSeq(longestLockToken); !ok || seq != 9223372036854775807 {
		t.Fatalf("lockSeq(longestLockToken) = %d, %v", seq, ok)
	}
	for _, tok := range []string{"", p, p + "0", p + "-1", p + "x", p + "9223372036854775808", "nope"} {
		if seq, ok := lockSeq(tok); ok {
			t.Errorf("lockSeq(%q) = %d, true; want no sequence number", tok, seq)
		}
	}
}

// claimedWithMessages stores device "d" with n Enqueued messages (seq 1…n) and lets node "n1"
// claim it; it returns the claim's epoch.
func claimedWithMessages(t *testing.T, st store, n int64) (epoch int64) {
	t.Helper()
	up(t, st, func(tx storeTx) error {
		if err := tx.insertDevice(deviceRow{ID: "d", Status: iothub.DeviceEnabled, UpdatedAt: at(0)}); err != nil {
			return err
		}
		for seq := int64(1); seq <= n; seq++ {
			m := testMsg("d", seq)
			if err := tx.insertMessage(&m); err != nil {
				return err
			}
		}
		var err error
		epoch, err = tx.claimDevice("d", "n1", at(0))
		return err
	})
	return epoch
}
