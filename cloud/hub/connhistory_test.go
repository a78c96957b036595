package hub

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// `device show` after a restart still says since when a device is disconnected and when it was
// last active; a deleted and re-created device starts with no history.
func TestConnectionHistorySurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig()
	h := openHub(t, dir, cfg)
	mustDevice(t, h, "dev1")
	mustDevice(t, h, "dev2")
	mustDevice(t, h, "never")
	c := newConn("dev1")
	h.Attach(c)
	mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "m1"})
	settle(t, h, "dev1", c.next(t), iothub.DispositionComplete, "")
	h.Detach(c)
	h.Attach(newConn("dev2")) // still connected when the hub stops
	before, err := h.GetDevice(context.Background(), "dev1")
	if err != nil {
		t.Fatal(err)
	}
	live2, _ := h.GetDevice(context.Background(), "dev2")
	if before.ConnectionStateUpdatedTime.IsZero() || before.LastActivityTime.IsZero() || before.ConnectionState != "Disconnected" {
		t.Fatalf("before restart: %+v", before)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}

	h2 := openHub(t, dir, cfg)
	after, err := h2.GetDevice(context.Background(), "dev1")
	if err != nil {
		t.Fatal(err)
	}
	if after.ConnectionState != "Disconnected" || !after.ConnectionStateUpdatedTime.Equal(before.ConnectionStateUpdatedTime) ||
		!after.LastActivityTime.Equal(before.LastActivityTime) {
		t.Errorf("dev1 after restart: state %s since %s, active %s; before: since %s, active %s", after.ConnectionState,
			after.ConnectionStateUpdatedTime, after.LastActivityTime, before.ConnectionStateUpdatedTime, before.LastActivityTime)
	}
	d2, _ := h2.GetDevice(context.Background(), "dev2")
	if d2.ConnectionState != "Disconnected" || d2.ConnectionStateUpdatedTime.Before(live2.ConnectionStateUpdatedTime) ||
		!d2.LastActivityTime.Equal(live2.LastActivityTime) {
		t.Errorf("dev2 (connected when the hub stopped) after restart: %s since %s, active %s; was connected since %s",
			d2.ConnectionState, d2.ConnectionStateUpdatedTime, d2.LastActivityTime, live2.ConnectionStateUpdatedTime)
	}
	if n, _ := h2.GetDevice(context.Background(), "never"); !n.ConnectionStateUpdatedTime.IsZero() || !n.LastActivityTime.IsZero() {
		t.Errorf("a device that never connected has history: %+v", n)
	}

	// Deleting the device deletes its history.
	if err := h2.DeleteDevice(context.Background(), "dev1", ""); err != nil {
		t.Fatal(err)
	}
	mustDevice(t, h2, "dev1")
	if err := h2.Close(); err != nil {
		t.Fatal(err)
	}
	h3 := openHub(t, dir, cfg)
	if d, _ := h3.GetDevice(context.Background(), "dev1"); !d.ConnectionStateUpdatedTime.IsZero() || !d.LastActivityTime.IsZero() {
		t.Errorf("re-created dev1 inherited history: since %s, active %s", d.ConnectionStateUpdatedTime, d.LastActivityTime)
	}
}

// Activity is coalesced: many settles between two flushes are one write of the device's record.
func TestConnectionHistoryIsCoalesced(t *testing.T) {
	h := newTestHub(t, testConfig())
	mustDevice(t, h, "dev1")
	c := newConn("dev1")
	h.Attach(c)
	for i := 0; i < 20; i++ {
		mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "m" + string(rune('a'+i))})
		settle(t, h, "dev1", c.next(t), iothub.DispositionComplete, "")
	}
	h.flushConnHistory()
	var recs []connRecord
	if err := h.st.view(context.Background(), func(tx storeTx) error {
		var err error
		recs, err = tx.connHistory()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	d, _ := h.GetDevice(context.Background(), "dev1")
	if len(recs) != 1 || !recs[0].Connected || !recs[0].LastActivity.Equal(d.LastActivityTime) {
		t.Fatalf("stored history %+v; device shows active %s", recs, d.LastActivityTime)
	}
	if time.Since(recs[0].FlushedAt) > time.Minute {
		t.Errorf("flushed_at %s", recs[0].FlushedAt)
	}
}

// A flush writes what changed since the last one, activity alone included, and nothing for a
// device whose record did not change (an idle fleet costs no writes), whatever the other devices'
// records did.
func TestConnectionHistoryFlushWritesActivityAloneAndSkipsTheUnchanged(t *testing.T) {
	clk := newManualClock()
	clk.Pause()
	cfg := testConfig()
	cfg.Clock = clk
	h := newTestHub(t, cfg)
	mustDevice(t, h, "dev1")
	c := newConn("dev1")
	h.Attach(c)
	for i := range 20 { // idle beside dev1
		id := fmt.Sprintf("idle-%d", i)
		mustDevice(t, h, id)
		h.Attach(newConn(id))
	}
	stored := func() connRecord {
		t.Helper()
		var recs []connRecord
		if err := h.st.view(context.Background(), func(tx storeTx) error {
			var err error
			recs, err = tx.connHistory()
			return err
		}); err != nil || len(recs) != 21 {
			t.Fatalf("%d stored records, %v; want 21", len(recs), err)
		}
		for _, r := range recs {
			if r.DeviceID == "dev1" {
				return r
			}
		}
		t.Fatal("no record of dev1")
		return connRecord{}
	}
	activity := func(id string) time.Time {
		t.Helper()
		mustSend(t, h, "dev1", iothub.SendRequest{MessageID: id})
		settle(t, h, "dev1", c.next(t), iothub.DispositionComplete, "")
		d, _ := h.GetDevice(context.Background(), "dev1")
		return d.LastActivityTime
	}

	first := activity("m1")
	h.flushConnHistory()
	r1 := stored()
	if !r1.LastActivity.Equal(first) {
		t.Fatalf("first flush stored activity %s, want %s", r1.LastActivity, first)
	}
	clk.Advance(time.Second)
	h.flushConnHistory() // nothing changed
	if r := stored(); !r.FlushedAt.Equal(r1.FlushedAt) {
		t.Fatalf("an unchanged record was written again (flushed_at %s → %s)", r1.FlushedAt, r.FlushedAt)
	}
	clk.Advance(time.Second)
	second := activity("m2") // connected since the same time: only the activity moved
	if !second.After(first) {
		t.Fatalf("activity %s not after %s: the clock did not move", second, first)
	}
	h.flushConnHistory()
	if r := stored(); !r.LastActivity.Equal(second) || !r.StateUpdated.Equal(r1.StateUpdated) {
		t.Fatalf("after new activity alone: stored active %s since %s; want active %s since %s", r.LastActivity, r.StateUpdated, second, r1.StateUpdated)
	}
	// A disconnect and a reconnect within the same clock reading (a reconnect storm, a coarse
	// clock) keep the state's time and the activity: the state alone changed, and is written.
	h.Detach(c)
	h.flushConnHistory()
	if r := stored(); r.Connected {
		t.Fatalf("after the disconnect: stored %+v; want disconnected", r)
	}
	c = newConn("dev1")
	h.Attach(c)
	h.flushConnHistory()
	if r := stored(); !r.Connected {
		t.Fatalf("after the reconnect at the same instant: stored %+v; want connected", r)
	}
}
