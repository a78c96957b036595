package hub

import (
	"context"
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
