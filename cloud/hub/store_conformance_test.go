package hub

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
	"github.com/c2d-project/c2d/internal/pgtest"
)

// The store conformance suite: every storeTx operation, the group commit and the migrations, run
// against SQLite and PostgreSQL alike, so that the two stores cannot drift. The expectations are
// written from the interface's contract (store.go), not from either implementation.

// storeKind opens one kind of store; open may be called again after close (same data).
type storeKind struct {
	name    string
	newOpen func(t *testing.T) func() (store, error)
}

var storeKinds = []storeKind{
	{"sqlite", func(t *testing.T) func() (store, error) {
		dir := t.TempDir()
		return func() (store, error) { return openSQLite(context.Background(), dir, slog.New(slog.DiscardHandler)) }
	}},
	{"postgres", func(t *testing.T) func() (store, error) {
		url := pgtest.DB(t)
		return func() (store, error) { return openPostgres(context.Background(), url, slog.New(slog.DiscardHandler)) }
	}},
}

// eachStore runs fn once per store kind, with a fresh store.
func eachStore(t *testing.T, fn func(t *testing.T, st store, reopen func() store)) {
	for _, k := range storeKinds {
		t.Run(k.name, func(t *testing.T) {
			open := k.newOpen(t)
			var cur store
			reopen := func() store {
				t.Helper()
				if cur != nil {
					cur.close()
				}
				st, err := open()
				if err != nil {
					t.Fatalf("open %s store: %v", k.name, err)
				}
				cur = st
				return st
			}
			st := reopen()
			t.Cleanup(func() { cur.close() })
			fn(t, st, reopen)
		})
	}
}

func up(t *testing.T, st store, fn func(tx storeTx) error) {
	t.Helper()
	if err := st.update(context.Background(), fn); err != nil {
		t.Fatalf("update: %v", err)
	}
}

func see(t *testing.T, st store, fn func(tx storeTx) error) {
	t.Helper()
	if err := st.view(context.Background(), fn); err != nil {
		t.Fatalf("view: %v", err)
	}
}

// base is a fixed instant with whole milliseconds (what the stores keep).
var base = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

func at(d time.Duration) time.Time { return base.Add(d) }

func TestStoreRegistry(t *testing.T) {
	eachStore(t, func(t *testing.T, st store, reopen func() store) {
		d := deviceRow{ID: "dev-1", GenerationID: "g1", ETag: "e1", Status: iothub.DeviceEnabled,
			StatusReason: "ok", PrimaryKey: "pk", SecondaryKey: "sk", LastSeq: 0, UpdatedAt: at(0)}
		up(t, st, func(tx storeTx) error {
			if err := tx.insertDevice(d); err != nil {
				return err
			}
			return tx.insertDevice(deviceRow{ID: "a-dev", GenerationID: "g2", ETag: "e", Status: iothub.DeviceDisabled, UpdatedAt: at(time.Second)})
		})
		if err := st.update(context.Background(), func(tx storeTx) error { return tx.insertDevice(d) }); err == nil {
			t.Fatal("inserting a device id twice succeeded")
		}
		st = reopen()
		see(t, st, func(tx storeTx) error {
			got, ok, err := tx.device("dev-1")
			if err != nil || !ok || got != d {
				t.Fatalf("device = %+v, %v, %v\nwant %+v", got, ok, err, d)
			}
			if _, ok, err := tx.device("nope"); ok || err != nil {
				t.Fatalf("missing device: found %v, %v", ok, err)
			}
			ds, err := tx.devices()
			if err != nil || len(ds) != 2 || ds[0].ID != "a-dev" || ds[1].ID != "dev-1" {
				t.Fatalf("devices = %+v, %v (want sorted by id)", ds, err)
			}
			return nil
		})
		d.ETag, d.Status, d.PrimaryKey, d.LastSeq, d.UpdatedAt = "e2", iothub.DeviceDisabled, "pk2", 7, at(time.Minute)
		up(t, st, func(tx storeTx) error { return tx.updateDevice(d) })
		see(t, st, func(tx storeTx) error {
			if got, _, _ := tx.device("dev-1"); got != d {
				t.Fatalf("after update = %+v, want %+v", got, d)
			}
			return nil
		})

		p := Policy{Name: "svc", PrimaryKey: "k1", SecondaryKey: "k2", Rights: []Permission{ServiceConnect, RegistryRead}}
		up(t, st, func(tx storeTx) error {
			if err := tx.insertPolicy(Policy{Name: "b", Rights: []Permission{DeviceConnect}}); err != nil {
				return err
			}
			return tx.insertPolicy(p)
		})
		see(t, st, func(tx storeTx) error {
			ps, err := tx.policies()
			if err != nil || len(ps) != 2 || ps[0].Name != "b" || !reflect.DeepEqual(ps[1], p) {
				t.Fatalf("policies = %+v, %v", ps, err)
			}
			return nil
		})
	})
}

func TestStoreDeleteDeviceTakesItsState(t *testing.T) {
	eachStore(t, func(t *testing.T, st store, _ func() store) {
		up(t, st, func(tx storeTx) error {
			for _, id := range []string{"gone", "kept"} {
				if err := tx.insertDevice(deviceRow{ID: id, Status: iothub.DeviceEnabled, UpdatedAt: at(0)}); err != nil {
					return err
				}
				for seq := int64(1); seq <= 2; seq++ {
					m := testMsg(id, seq)
					if err := tx.insertMessage(&m); err != nil {
						return err
					}
				}
				m := testMsg(id, 1)
				m.Outcome, m.State, m.SettledAt = iothub.StatusSuccess, iothub.StateCompleted, at(time.Second)
				if err := tx.settle(&m); err != nil {
					return err
				}
				if err := tx.insertRecord(testRecord(id, "r-"+id), at(0)); err != nil {
					return err
				}
			}
			// One batch with only gone's record, one with both.
			if _, err := tx.formBatch(batchRow{ID: 1, EnqueuedAt: at(0), ExpiresAt: at(time.Hour)}, 1); err != nil {
				return err
			}
			if err := tx.insertRecord(testRecord("gone", "r2"), at(0)); err != nil {
				return err
			}
			_, err := tx.formBatch(batchRow{ID: 2, EnqueuedAt: at(0), ExpiresAt: at(time.Hour)}, 10)
			return err
		})
		up(t, st, func(tx storeTx) error { return tx.deleteDevice("gone") })
		see(t, st, func(tx storeTx) error {
			if _, ok, _ := tx.device("gone"); ok {
				t.Fatal("deleted device still there")
			}
			if n, _ := tx.pendingCount("gone"); n != 0 {
				t.Fatalf("%d messages of the deleted device left", n)
			}
			if _, ok, _ := tx.byMessageID("gone", "m1"); ok {
				t.Fatal("settled outcome of the deleted device left")
			}
			if n, _ := tx.pendingCount("kept"); n != 1 {
				t.Fatalf("other device's queue: %d, want 1", n)
			}
			if _, ok, _ := tx.byMessageID("kept", "m1"); !ok {
				t.Fatal("other device's settled outcome went too")
			}
			if n, _ := tx.pendingFeedback(); n != 1 {
				t.Fatalf("%d feedback records left, want the other device's 1", n)
			}
			if _, ok, _ := tx.availableBatch(at(0)); !ok {
				t.Fatal("the batch holding the other device's record went too")
			}
			if id, _ := tx.maxBatchID(); id != 2 {
				t.Fatalf("max batch id %d: the batch of only deleted records must go", id)
			}
			return nil
		})
	})
}

func testMsg(dev string, seq int64) msgRow {
	return msgRow{
		DeviceID: dev, Seq: seq, MessageID: fmt.Sprintf("m%d", seq), CorrelationID: "c", UserID: "u",
		Ack: iothub.AckFull, ContentType: "application/json", ContentEncoding: "utf-8",
		Properties: []iothub.AppProperty{{Name: "led", Value: "on"}, {Name: "ünï", Value: "a&b=c"}},
		Body:       []byte{0, 1, 2, 0xff}, EnqueuedAt: at(time.Duration(seq) * time.Second),
		ExpiresAt: at(time.Hour + time.Duration(seq)*time.Second), ExplicitExpiry: seq%2 == 0,
		State: iothub.StateEnqueued,
	}
}

func testRecord(dev, mid string) iothub.FeedbackRecord {
	return iothub.FeedbackRecord{OriginalMessageID: mid, DeviceID: dev, DeviceGenerationID: "g",
		EnqueuedTimeUTC: at(time.Minute), StatusCode: iothub.StatusRejected,
		Description: iothub.FeedbackDescription(iothub.StatusRejected), Reason: "bad pin", DeliveryCount: 3, CorrelationID: "c"}
}

func sameMsg(t *testing.T, what string, got, want msgRow) {
	t.Helper()
	if !bytes.Equal(got.Body, want.Body) {
		t.Fatalf("%s: body %x, want %x", what, got.Body, want.Body)
	}
	got.Body, want.Body = nil, nil
	if got.Properties == nil && got.storedProps != "" {
		// Returned as stored (takeLocked): the stored form must decode to the properties.
		p, err := unmarshalProps(got.storedProps)
		if err != nil {
			t.Fatalf("%s: stored properties %q: %v", what, got.storedProps, err)
		}
		got.Properties = p
	}
	got.storedProps, want.storedProps = "", ""
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s:\n got %+v\nwant %+v", what, got, want)
	}
}

func TestStoreMessageLifecycle(t *testing.T) {
	eachStore(t, func(t *testing.T, st store, reopen func() store) {
		var sent []msgRow
		up(t, st, func(tx storeTx) error {
			if err := tx.insertDevice(deviceRow{ID: "d", Status: iothub.DeviceEnabled, UpdatedAt: at(0)}); err != nil {
				return err
			}
			for seq := int64(1); seq <= 3; seq++ {
				m := testMsg("d", seq)
				if seq == 3 {
					m.Properties, m.Body = nil, nil
				}
				if err := tx.insertMessage(&m); err != nil {
					return err
				}
				if err := sqlOf(tx).setLastSeq("d", seq); err != nil {
					return err
				}
				sent = append(sent, m)
			}
			return nil
		})
		st = reopen()
		see(t, st, func(tx storeTx) error {
			last, n, ok, err := sqlOf(tx).sendInfo("d")
			if err != nil || !ok || last != 3 || n != 3 {
				t.Fatalf("sendInfo = %d, %d, %v, %v", last, n, ok, err)
			}
			if _, _, ok, _ := sqlOf(tx).sendInfo("nope"); ok {
				t.Fatal("sendInfo found a missing device")
			}
			ms, err := sqlOf(tx).enqueued("d", 2)
			if err != nil || len(ms) != 2 {
				t.Fatalf("enqueued(limit 2) = %d, %v", len(ms), err)
			}
			sameMsg(t, "first enqueued", ms[0], sent[0])
			sameMsg(t, "second enqueued", ms[1], sent[1])
			all, _ := tx.pending("d")
			if len(all) != 3 {
				t.Fatalf("pending = %d", len(all))
			}
			sameMsg(t, "message without properties and body", all[2], sent[2])
			counts, err := tx.pendingCounts()
			if err != nil || !reflect.DeepEqual(counts, map[string]int{"d": 3}) {
				t.Fatalf("pendingCounts = %v, %v", counts, err)
			}
			return nil
		})
		// Deliver 1 and 2: lock them.
		up(t, st, func(tx storeTx) error {
			if err := sqlOf(tx).setLock("d", 1, testToken("tok", 1), at(time.Minute), 1); err != nil {
				return err
			}
			return sqlOf(tx).setLock("d", 2, testToken("tok", 2), at(2*time.Minute), 4)
		})
		see(t, st, func(tx storeTx) error {
			m, ok, err := tx.byToken("d", testToken("tok", 2))
			want := sent[1]
			want.State, want.LockToken, want.LockedUntil, want.DeliveryCount = iothub.StateInvisible, testToken("tok", 2), at(2*time.Minute), 4
			if err != nil || !ok {
				t.Fatalf("byToken: %v, %v", ok, err)
			}
			sameMsg(t, "locked message", m, want)
			if _, ok, _ := tx.byToken("other", testToken("tok", 2)); ok {
				t.Fatal("byToken found a token under another device")
			}
			// A token ends in its message's sequence number; the rest must match too.
			if _, ok, _ := tx.byToken("d", testToken("tik", 2)); ok {
				t.Fatal("byToken found message 2 by a token of another prefix")
			}
			if _, ok, _ := tx.byToken("d", testToken("tok", 3)); ok {
				t.Fatal("byToken found message 3, which is not locked, by a token")
			}
			if ms, _ := sqlOf(tx).enqueued("d", 10); len(ms) != 1 || ms[0].Seq != 3 {
				t.Fatalf("enqueued while 1, 2 are locked = %+v", ms)
			}
			inv, _ := tx.invisible()
			if len(inv) != 2 || inv[0].Seq != 1 || inv[1].Seq != 2 {
				t.Fatalf("invisible = %+v", inv)
			}
			// The earliest deadline: message 1's lock (message 3's expiry is an hour away).
			if d, err := tx.nextMessageDeadline(); err != nil || !d.Equal(at(time.Minute)) {
				t.Fatalf("nextMessageDeadline = %v, %v", d, err)
			}
			if ms, _ := tx.lockExpired(at(time.Minute-time.Millisecond), 10); len(ms) != 0 {
				t.Fatalf("lockExpired before the lock ends: %+v", ms)
			}
			if ms, _ := tx.lockExpired(at(time.Hour), 1); len(ms) != 1 || ms[0].Seq != 1 {
				t.Fatalf("lockExpired(limit 1) = %+v", ms)
			}
			// TTL applies to Enqueued messages only: 1 and 2 expire sooner but are locked.
			if ms, _ := tx.ttlExpired(at(2*time.Hour), 10); len(ms) != 1 || ms[0].Seq != 3 {
				t.Fatalf("ttlExpired = %+v", ms)
			}
			if ms, _ := tx.ttlExpired(at(time.Hour), 10); len(ms) != 0 {
				t.Fatalf("ttlExpired before any expiry = %+v", ms)
			}
			return nil
		})
		// takeLocked takes a message only under its own device and token, while it is locked.
		up(t, st, func(tx storeTx) error {
			for _, c := range []struct {
				dev, tok string
				now      time.Time
			}{{"other", testToken("tok", 2), at(0)}, {"d", "nope", at(0)}, {"d", testToken("tik", 2), at(0)},
				{"d", testToken("tok", 3), at(0)}, {"d", testToken("tok", 2), at(2 * time.Minute)}, {"d", testToken("tok", 2), at(time.Hour)}} {
				if m, ok, err := tx.takeLocked(c.dev, c.tok, c.now); err != nil || ok {
					return fmt.Errorf("takeLocked(%s, %s, %v) = %+v, %v, %v; want nothing", c.dev, c.tok, c.now, m, ok, err)
				}
			}
			return nil
		})
		see(t, st, func(tx storeTx) error {
			if _, ok, _ := tx.byToken("d", testToken("tok", 2)); !ok {
				t.Fatal("a takeLocked that matched nothing removed the message")
			}
			return nil
		})
		// Abandon 1 (requeue), complete 2 (settle).
		up(t, st, func(tx storeTx) error {
			if err := tx.requeue("d", 1); err != nil {
				return err
			}
			m, _, err := tx.byToken("d", testToken("tok", 2))
			if err != nil {
				return err
			}
			m.Outcome, m.Reason, m.SettledAt, m.State = iothub.StatusRejected, "why", at(3*time.Minute), iothub.StateDeadLettered
			return tx.settle(&m)
		})
		st = reopen()
		see(t, st, func(tx storeTx) error {
			if _, ok, _ := tx.byToken("d", testToken("tok", 1)); ok {
				t.Fatal("a requeued message still answers to its old lock token")
			}
			ms, _ := sqlOf(tx).enqueued("d", 10)
			if len(ms) != 2 || ms[0].Seq != 1 || ms[0].DeliveryCount != 1 || ms[0].LockToken != "" || !ms[0].LockedUntil.IsZero() {
				t.Fatalf("after requeue: %+v", ms)
			}
			// Requeued, it has no lock, so TTL applies to it again (it expires before message 3).
			if ms, _ := tx.ttlExpired(at(2*time.Hour), 10); len(ms) != 2 || ms[0].Seq != 1 || ms[1].Seq != 3 {
				t.Fatalf("ttlExpired after the requeue = %+v", ms)
			}
			if n, _ := tx.pendingCount("d"); n != 2 {
				t.Fatalf("pendingCount after settle = %d", n)
			}
			s, ok, err := tx.byMessageID("d", "m2")
			if err != nil || !ok || s.Outcome != iothub.StatusRejected || s.Reason != "why" || s.State != iothub.StateDeadLettered ||
				!s.SettledAt.Equal(at(3*time.Minute)) || s.DeliveryCount != 4 || s.Seq != 2 ||
				!reflect.DeepEqual(s.Properties, sent[1].Properties) || !s.EnqueuedAt.Equal(sent[1].EnqueuedAt) {
				t.Fatalf("settled byMessageID = %+v, %v, %v", s, ok, err)
			}
			p, ok, _ := tx.byMessageID("d", "m1")
			if !ok || p.State != iothub.StateEnqueued || p.Outcome != "" {
				t.Fatalf("pending byMessageID = %+v", p)
			}
			if _, ok, _ := tx.byMessageID("d", "none"); ok {
				t.Fatal("byMessageID found a message never sent")
			}
			return nil
		})
		// A newer message with a settled one's id answers for that id, and vice versa.
		up(t, st, func(tx storeTx) error {
			m := testMsg("d", 4)
			m.MessageID = "m2"
			return tx.insertMessage(&m)
		})
		see(t, st, func(tx storeTx) error {
			if m, _, _ := tx.byMessageID("d", "m2"); m.Seq != 4 || m.Outcome != "" {
				t.Fatalf("byMessageID with a newer pending message = %+v", m)
			}
			return nil
		})
		up(t, st, func(tx storeTx) error {
			m, _, _ := tx.byMessageID("d", "m2")
			m.Outcome, m.SettledAt, m.State = iothub.StatusPurged, at(4*time.Minute), iothub.StateDeadLettered
			return tx.settle(&m)
		})
		see(t, st, func(tx storeTx) error {
			if m, _, _ := tx.byMessageID("d", "m2"); m.Seq != 4 || m.Outcome != iothub.StatusPurged {
				t.Fatalf("byMessageID with two settled = %+v", m)
			}
			return nil
		})
		// takeLocked on a valid lock returns the message as stored and removes it; insertSettled
		// records its outcome.
		up(t, st, func(tx storeTx) error {
			m := testMsg("d", 5)
			if err := tx.insertMessage(&m); err != nil {
				return err
			}
			return sqlOf(tx).setLock("d", 5, testToken("tok", 5), at(time.Minute), 2)
		})
		up(t, st, func(tx storeTx) error {
			m, ok, err := tx.takeLocked("d", testToken("tok", 5), at(time.Minute-time.Millisecond))
			if err != nil || !ok {
				return fmt.Errorf("takeLocked on a valid lock: %v, %v", ok, err)
			}
			want := testMsg("d", 5)
			want.State, want.LockToken, want.LockedUntil, want.DeliveryCount = iothub.StateInvisible, testToken("tok", 5), at(time.Minute), 2
			sameMsg(t, "taken message", m, want)
			if again, ok, err := tx.takeLocked("d", testToken("tok", 5), at(0)); err != nil || ok {
				return fmt.Errorf("takeLocked twice: %+v, %v, %v", again, ok, err)
			}
			m.Outcome, m.SettledAt, m.State = iothub.StatusSuccess, at(30*time.Minute), iothub.StateCompleted
			return tx.insertSettled(&m)
		})
		see(t, st, func(tx storeTx) error {
			if _, ok, _ := tx.byToken("d", testToken("tok", 5)); ok {
				t.Fatal("a taken message is still pending")
			}
			s, ok, err := tx.byMessageID("d", testMsg("d", 5).MessageID)
			if err != nil || !ok || s.Seq != 5 || s.Outcome != iothub.StatusSuccess || s.DeliveryCount != 2 || !s.SettledAt.Equal(at(30*time.Minute)) {
				t.Fatalf("taken message's outcome = %+v, %v, %v", s, ok, err)
			}
			return nil
		})
		var pruned int64
		up(t, st, func(tx storeTx) error {
			var err error
			pruned, err = tx.pruneSettled(at(4 * time.Minute)) // strictly before
			return err
		})
		if pruned != 1 {
			t.Fatalf("pruneSettled = %d, want 1 (the outcome settled at 3 min)", pruned)
		}
		see(t, st, func(tx storeTx) error {
			if _, ok, _ := tx.byMessageID("d", "m2"); !ok {
				t.Fatal("prune took the outcome settled at the boundary")
			}
			return nil
		})
	})
}

func TestStoreFeedbackBatches(t *testing.T) {
	eachStore(t, func(t *testing.T, st store, reopen func() store) {
		see(t, st, func(tx storeTx) error {
			n, oldest, err := tx.unbatched()
			if err != nil || n != 0 || !oldest.IsZero() {
				t.Fatalf("unbatched on empty = %d, %v, %v", n, oldest, err)
			}
			if d, _ := tx.nextBatchDeadline(); !d.IsZero() {
				t.Fatalf("nextBatchDeadline on empty = %v", d)
			}
			if _, ok, _ := tx.availableBatch(at(0)); ok {
				t.Fatal("a batch on an empty store")
			}
			return nil
		})
		var recs []iothub.FeedbackRecord
		up(t, st, func(tx storeTx) error {
			for i := range 3 {
				r := testRecord("d", fmt.Sprintf("m%d", i))
				r.StatusCode = []iothub.FeedbackStatus{iothub.StatusSuccess, iothub.StatusExpired, iothub.StatusRejected}[i]
				if err := tx.insertRecord(r, at(time.Duration(i)*time.Second)); err != nil {
					return err
				}
				recs = append(recs, r)
			}
			return nil
		})
		var k int
		up(t, st, func(tx storeTx) error {
			n, oldest, err := tx.unbatched()
			if err != nil || n != 3 || !oldest.Equal(at(0)) {
				t.Fatalf("unbatched = %d, %v, %v", n, oldest, err)
			}
			if id, _ := tx.maxBatchID(); id != 0 {
				t.Fatalf("maxBatchID with none = %d", id)
			}
			k, err = tx.formBatch(batchRow{ID: 1, EnqueuedAt: at(time.Minute), ExpiresAt: at(time.Hour)}, 2)
			return err
		})
		if k != 2 {
			t.Fatalf("formBatch(limit 2) took %d", k)
		}
		st = reopen()
		var b batchRow
		see(t, st, func(tx storeTx) error {
			if n, oldest, _ := tx.unbatched(); n != 1 || !oldest.Equal(at(2*time.Second)) {
				t.Fatalf("unbatched after a batch = %d, %v", n, oldest)
			}
			if n, _ := tx.pendingFeedback(); n != 3 {
				t.Fatalf("pendingFeedback = %d", n)
			}
			var ok bool
			b, ok, _ = tx.availableBatch(at(time.Minute))
			if !ok || b != (batchRow{ID: 1, EnqueuedAt: at(time.Minute), ExpiresAt: at(time.Hour)}) {
				t.Fatalf("availableBatch = %+v, %v", b, ok)
			}
			if _, ok, _ := tx.availableBatch(at(time.Hour)); ok {
				t.Fatal("a batch whose TTL passed is available")
			}
			got, err := tx.batchRecords(1)
			if err != nil || !reflect.DeepEqual(got, recs[:2]) {
				t.Fatalf("batchRecords = %+v, %v\nwant %+v", got, err, recs[:2])
			}
			if d, _ := tx.nextBatchDeadline(); !d.Equal(at(time.Hour)) {
				t.Fatalf("nextBatchDeadline = %v", d)
			}
			return nil
		})
		up(t, st, func(tx storeTx) error { return tx.lockBatch(1, "ftok", at(2*time.Minute), 1) })
		see(t, st, func(tx storeTx) error {
			if _, ok, _ := tx.availableBatch(at(time.Minute)); ok {
				t.Fatal("a locked batch is available")
			}
			got, ok, _ := tx.batchByToken("ftok")
			if !ok || got.LockToken != "ftok" || !got.LockedUntil.Equal(at(2*time.Minute)) || got.DeliveryCount != 1 {
				t.Fatalf("batchByToken = %+v, %v", got, ok)
			}
			if d, _ := tx.nextBatchDeadline(); !d.Equal(at(2 * time.Minute)) {
				t.Fatalf("nextBatchDeadline while locked = %v", d)
			}
			if bs, _ := tx.lockExpiredBatches(at(2*time.Minute - time.Millisecond)); len(bs) != 0 {
				t.Fatalf("lockExpiredBatches early = %+v", bs)
			}
			if bs, _ := tx.lockExpiredBatches(at(2 * time.Minute)); len(bs) != 1 || bs[0].ID != 1 {
				t.Fatalf("lockExpiredBatches = %+v", bs)
			}
			if ids, _ := tx.expiredBatches(at(2 * time.Hour)); len(ids) != 0 {
				t.Fatalf("expiredBatches lists a locked batch: %v", ids)
			}
			return nil
		})
		up(t, st, func(tx storeTx) error { return tx.unlockBatch(1) })
		var unlocked int64
		up(t, st, func(tx storeTx) error {
			if _, ok, _ := tx.batchByToken("ftok"); ok {
				t.Fatal("an unlocked batch answers to its old token")
			}
			if _, err := tx.formBatch(batchRow{ID: 2, EnqueuedAt: at(0), ExpiresAt: at(30 * time.Minute)}, 10); err != nil {
				return err
			}
			if err := tx.lockBatch(2, "ftok2", at(time.Minute), 1); err != nil {
				return err
			}
			var err error
			unlocked, err = tx.unlockAllBatches()
			return err
		})
		if unlocked != 1 {
			t.Fatalf("unlockAllBatches = %d", unlocked)
		}
		see(t, st, func(tx storeTx) error {
			if id, _ := tx.maxBatchID(); id != 2 {
				t.Fatalf("maxBatchID = %d", id)
			}
			if ids, _ := tx.expiredBatches(at(45 * time.Minute)); !reflect.DeepEqual(ids, []int64{2}) {
				t.Fatalf("expiredBatches = %v", ids)
			}
			if b, _, _ := tx.availableBatch(at(0)); b.ID != 1 {
				t.Fatalf("availableBatch takes the oldest: %+v", b)
			}
			return nil
		})
		up(t, st, func(tx storeTx) error { return tx.deleteBatch(1) })
		see(t, st, func(tx storeTx) error {
			if n, _ := tx.pendingFeedback(); n != 1 {
				t.Fatalf("pendingFeedback after deleting batch 1 = %d", n)
			}
			if recs, _ := tx.batchRecords(1); len(recs) != 0 {
				t.Fatalf("records of a deleted batch: %+v", recs)
			}
			return nil
		})
		// Forming from a count read before another node batched the records finds nothing to
		// take: no batch is left behind for a receiver to get with no records in it.
		up(t, st, func(tx storeTx) error { return tx.deleteBatch(2) })
		up(t, st, func(tx storeTx) error {
			k, err := tx.formBatch(batchRow{ID: 3, EnqueuedAt: at(0), ExpiresAt: at(time.Hour)}, 10)
			if err == nil && k != 0 {
				t.Fatalf("formBatch with nothing unbatched took %d", k)
			}
			return err
		})
		see(t, st, func(tx storeTx) error {
			if b, ok, _ := tx.availableBatch(at(0)); ok {
				t.Fatalf("an empty batch is available: %+v", b)
			}
			if id, _ := tx.maxBatchID(); id != 0 {
				t.Fatalf("maxBatchID after an empty form = %d, want 0 (no batch left)", id)
			}
			return nil
		})
	})
}

// nextSeq hands out sequence numbers while the queue has room, and changes nothing when it is
// full or the device unknown.
func TestStoreNextSeq(t *testing.T) {
	eachStore(t, func(t *testing.T, st store, _ func() store) {
		up(t, st, func(tx storeTx) error {
			return tx.insertDevice(deviceRow{ID: "d", Status: iothub.DeviceEnabled, LastSeq: 40, UpdatedAt: at(0)})
		})
		for i := int64(1); i <= 3; i++ {
			up(t, st, func(tx storeTx) error {
				seq, _, ok, err := tx.nextSeq("d", 3)
				if err != nil || !ok || seq != 40+i {
					return fmt.Errorf("nextSeq %d = %d, %v, %v; want %d", i, seq, ok, err, 40+i)
				}
				m := testMsg("d", seq)
				return tx.insertMessage(&m)
			})
		}
		up(t, st, func(tx storeTx) error {
			if seq, n, ok, err := tx.nextSeq("d", 3); err != nil || !ok || seq != 0 || n != 3 {
				return fmt.Errorf("nextSeq on a full queue = %d, %d, %v, %v; want 0, 3 pending", seq, n, ok, err)
			}
			if seq, _, ok, err := tx.nextSeq("nope", 3); err != nil || ok || seq != 0 {
				return fmt.Errorf("nextSeq of an unknown device = %d, %v, %v", seq, ok, err)
			}
			if seq, _, ok, err := tx.nextSeq("d", 4); err != nil || !ok || seq != 44 {
				return fmt.Errorf("nextSeq with room again = %d, %v, %v; want 44 (the refusal took no number)", seq, ok, err)
			}
			return nil
		})
	})
}

// lockNext locks exactly up to its limit, oldest Enqueued first, skipping locked messages, and
// returns the messages as locked (PostgreSQL once locked more than the limit: a subquery rerun).
func TestStoreLockNext(t *testing.T) {
	eachStore(t, func(t *testing.T, st store, _ func() store) {
		up(t, st, func(tx storeTx) error {
			for _, d := range []string{"d", "e"} {
				if err := tx.insertDevice(deviceRow{ID: d, Status: iothub.DeviceEnabled, UpdatedAt: at(0)}); err != nil {
					return err
				}
			}
			for seq := int64(1); seq <= 10; seq++ {
				m := testMsg("d", seq)
				if err := tx.insertMessage(&m); err != nil {
					return err
				}
			}
			m := testMsg("e", 1)
			return tx.insertMessage(&m)
		})
		for round, want := range [][]int64{{1, 2, 3}, {4, 5, 6}, {7, 8, 9}, {10}, {}} {
			var got []msgRow
			up(t, st, func(tx storeTx) error {
				var err error
				got, err = tx.lockNext("d", 3, at(time.Duration(round+1)*time.Minute), testPrefix(fmt.Sprintf("p%d-", round)))
				return err
			})
			if len(got) != len(want) {
				t.Fatalf("round %d: locked %d messages, want %v", round, len(got), want)
			}
			for i, m := range got {
				w := testMsg("d", want[i])
				w.State, w.DeliveryCount = iothub.StateInvisible, 1
				w.LockToken, w.LockedUntil = testToken(fmt.Sprintf("p%d-", round), want[i]), at(time.Duration(round+1)*time.Minute)
				sameMsg(t, fmt.Sprintf("round %d, message %d", round, i), m, w)
			}
		}
		see(t, st, func(tx storeTx) error {
			if ms, _ := sqlOf(tx).enqueued("e", 10); len(ms) != 1 {
				t.Fatalf("another device's queue changed: %+v", ms)
			}
			if m, ok, _ := tx.byToken("d", testToken("p1-", 5)); !ok || m.Seq != 5 || m.State != iothub.StateInvisible {
				t.Fatalf("byToken of a lockNext token: %+v, %v", m, ok)
			}
			return nil
		})
		// A requeued message is locked again, its delivery count going on.
		up(t, st, func(tx storeTx) error { return tx.requeue("d", 2) })
		up(t, st, func(tx storeTx) error {
			ms, err := tx.lockNext("d", 5, at(time.Hour), testPrefix("q"))
			if err != nil || len(ms) != 1 || ms[0].Seq != 2 || ms[0].DeliveryCount != 2 || ms[0].LockToken != testToken("q", 2) {
				return fmt.Errorf("lockNext after a requeue = %+v, %v", ms, err)
			}
			return nil
		})
	})
}

// Concurrent updates share commits; a failing one undoes only its own writes.
func TestStoreGroupCommitIsolatesFailures(t *testing.T) {
	eachStore(t, func(t *testing.T, st store, _ func() store) {
		boom := errors.New("boom")
		var wg sync.WaitGroup
		errs := make([]error, 64)
		for i := range errs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = st.update(context.Background(), func(tx storeTx) error {
					if err := tx.insertDevice(deviceRow{ID: fmt.Sprintf("d%02d", i), Status: iothub.DeviceEnabled, UpdatedAt: at(0)}); err != nil {
						return err
					}
					if i%3 == 0 {
						return boom
					}
					return nil
				})
			}()
		}
		wg.Wait()
		see(t, st, func(tx storeTx) error {
			for i, err := range errs {
				_, ok, _ := tx.device(fmt.Sprintf("d%02d", i))
				switch {
				case i%3 == 0 && (!errors.Is(err, boom) || ok):
					t.Fatalf("failing update %d: %v, its device stored %v", i, err, ok)
				case i%3 != 0 && (err != nil || !ok):
					t.Fatalf("update %d: %v, its device stored %v", i, err, ok)
				}
			}
			return nil
		})
	})
}

// Group-committed updates that fail in the ways there are, side by side with ones that succeed: a
// refusal decided from what was read (nothing to undo), a failure or a refusal after writing, and
// a statement that failed (on PostgreSQL that aborts the whole transaction). Each answer is its own,
// only the successful writes stay, and the batch-mates of a failing statement still commit.
func TestStoreGroupCommitFailureKinds(t *testing.T) {
	eachStore(t, func(t *testing.T, st store, _ func() store) {
		if err := st.update(context.Background(), func(tx storeTx) error {
			return tx.insertDevice(deviceRow{ID: "taken", Status: iothub.DeviceEnabled, UpdatedAt: at(0)})
		}); err != nil {
			t.Fatal(err)
		}
		boom := errors.New("boom")
		// A batch with a failure to undo runs again with savepoints; one with only refusals and
		// successes commits as it is: both paths are taken.
		for round, kinds := range [][]int{{0, 1, 2, 3, 4}, {0, 3, 4}, {0, 4}} {
			var wg sync.WaitGroup
			errs := make([]error, 64)
			id := func(i int) string { return fmt.Sprintf("r%d-d%02d", round, i) }
			// The writer is held until every update is queued, so they share one transaction.
			held, running := make(chan struct{}), make(chan struct{})
			go st.update(context.Background(), func(storeTx) error { close(running); <-held; return nil })
			<-running
			go func() {
				defer close(held)
				for deadline := time.Now().Add(10 * time.Second); len(st.(*sqlStore).lanes[0]) < len(errs) && time.Now().Before(deadline); {
					time.Sleep(time.Millisecond)
				}
			}()
			for i := range errs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					errs[i] = st.update(context.Background(), func(tx storeTx) error {
						switch kinds[i%len(kinds)] {
						case 0: // refused after reading
							if _, ok, err := tx.device(id(i)); err != nil || ok {
								return fmt.Errorf("device %s: %v %v", id(i), ok, err)
							}
							return errDeviceNotFound(id(i))
						case 1: // fails after writing
							if err := tx.insertDevice(deviceRow{ID: id(i), Status: iothub.DeviceEnabled, UpdatedAt: at(0)}); err != nil {
								return err
							}
							return boom
						case 2: // a statement fails: the primary key is taken
							return tx.insertDevice(deviceRow{ID: "taken", Status: iothub.DeviceEnabled, UpdatedAt: at(0)})
						case 3: // refused after writing
							if err := tx.insertDevice(deviceRow{ID: id(i), Status: iothub.DeviceEnabled, UpdatedAt: at(0)}); err != nil {
								return err
							}
							return errDeviceNotFound(id(i))
						}
						return tx.insertDevice(deviceRow{ID: id(i), Status: iothub.DeviceEnabled, UpdatedAt: at(0)})
					})
				}()
			}
			wg.Wait()
			see(t, st, func(tx storeTx) error {
				for i, err := range errs {
					_, ok, rerr := tx.device(id(i))
					if rerr != nil {
						return rerr
					}
					switch kinds[i%len(kinds)] {
					case 0, 3:
						if !errors.Is(err, ErrDeviceNotFound) || ok {
							t.Fatalf("refused update %s: %v, stored %v", id(i), err, ok)
						}
					case 1:
						if !errors.Is(err, boom) || ok {
							t.Fatalf("failing update %s: %v, stored %v", id(i), err, ok)
						}
					case 2:
						if err == nil || errors.Is(err, boom) || errors.Is(err, ErrDeviceNotFound) {
							t.Fatalf("duplicate insert %d: %v, want the store's constraint error", i, err)
						}
					case 4:
						if err != nil || !ok {
							t.Fatalf("update %s: %v, stored %v", id(i), err, ok)
						}
					}
				}
				return nil
			})
		}
	})
}

func TestStoreMigrationsAndNewerSchema(t *testing.T) {
	for _, k := range storeKinds {
		t.Run(k.name, func(t *testing.T) {
			open := k.newOpen(t)
			st, err := open()
			if err != nil {
				t.Fatal(err)
			}
			up(t, st, func(tx storeTx) error { return tx.insertPolicy(Policy{Name: "p", Rights: []Permission{DeviceConnect}}) })
			// A newer c2d-hub moved the schema on.
			var db *sql.DB
			q := fmt.Sprintf("PRAGMA user_version = %d", len(migrations)+1)
			if k.name == "postgres" {
				q = fmt.Sprintf("UPDATE c2d_schema SET version = %d", len(migrations)+1)
			}
			db = st.(*sqlStore).w
			if _, err := db.Exec(q); err != nil {
				t.Fatal(err)
			}
			st.close()
			_, err = open()
			if err == nil || !strings.Contains(err.Error(), "newer than this c2d-hub knows") {
				t.Fatalf("opening a newer schema: %v", err)
			}
		})
	}
}

// Several nodes starting at once on an empty database migrate it once (advisory lock).
func TestPostgresConcurrentStartMigratesOnce(t *testing.T) {
	url := pgtest.DB(t)
	var wg sync.WaitGroup
	stores := make([]store, 4)
	errs := make([]error, len(stores))
	for i := range stores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stores[i], errs[i] = openPostgres(context.Background(), url, slog.New(slog.DiscardHandler))
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
		defer stores[i].close()
	}
	var v int
	if err := stores[0].(*sqlStore).w.QueryRow(`SELECT version FROM c2d_schema`).Scan(&v); err != nil || v != len(migrations) {
		t.Fatalf("schema version %d, %v; want %d", v, err, len(migrations))
	}
	var rows int
	stores[0].(*sqlStore).w.QueryRow(`SELECT COUNT(*) FROM c2d_schema`).Scan(&rows)
	if rows != 1 {
		t.Fatalf("c2d_schema has %d rows", rows)
	}
}

func TestPostgresStartErrorsNameTheStore(t *testing.T) {
	for _, tc := range []struct{ url, want string }{
		{"postgres://c2d:s3cret@127.0.0.1:1/c2d?connect_timeout=2", "store postgres://c2d@127.0.0.1:1/c2d: connect"},
		{"postgres://c2d:s3cret@[::1/c2d", "is not a PostgreSQL connection string"},
		{"host=127.0.0.1 port=notaport password=s3cret", "is not a PostgreSQL connection string"},
		// What is wrong, when pgx says it apart from the string itself.
		{"postgres://c2d:s3cret@db1/c2d?sslmode=bogus", "is not a PostgreSQL connection string: sslmode is invalid"},
	} {
		_, err := openPostgres(context.Background(), tc.url, slog.New(slog.DiscardHandler))
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "<nil>") {
			t.Errorf("open %q: %v; want an error containing %q, without the password", tc.url, err, tc.want)
		}
	}
	if _, _, err := openStore(context.Background(), t.TempDir(), "mysql://x", nil); err == nil || !strings.Contains(err.Error(), "want sqlite, a postgres:// URL") {
		t.Errorf("unknown store kind: %v", err)
	}
}
