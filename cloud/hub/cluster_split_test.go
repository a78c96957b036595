package hub

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/c2d-project/c2d/internal/pgtest"
)

// A wake-up too large for one NOTIFY is split into payloads under PostgreSQL's limit that carry
// every entry of every list exactly once, each takeover still with its own epoch, and the
// feedback flag.
func TestSplitCarriesEveryEntryOnce(t *testing.T) {
	w := wake{Node: "a", Feedback: true}
	for i := range 300 {
		id := fmt.Sprintf("device-with-a-longish-name-%04d", i)
		w.Kick = append(w.Kick, id)
		w.Settled = append(w.Settled, [2]string{id, "message-" + id})
		w.Gone = append(w.Gone, id)
		w.Owned = append(w.Owned, id)
		w.OwnedAt = append(w.OwnedAt, int64(1000+i))
		w.Creds = append(w.Creds, id)
	}
	type entry struct {
		list, value string
	}
	seen := map[entry]int{}
	feedback := false
	parts := split(w)
	if len(parts) < 2 {
		t.Fatalf("a wake-up of %d entries in %d payload", 6*300, len(parts))
	}
	for _, p := range parts {
		if len(p) > maxNotifyPayload {
			t.Fatalf("payload of %d bytes, over %d", len(p), maxNotifyPayload)
		}
		var got wake
		if err := json.Unmarshal([]byte(p), &got); err != nil {
			t.Fatal(err)
		}
		if got.Node != "a" {
			t.Fatalf("payload from %q", got.Node)
		}
		feedback = feedback || got.Feedback
		if len(got.OwnedAt) != len(got.Owned) {
			t.Fatalf("a payload with %d takeovers and %d epochs", len(got.Owned), len(got.OwnedAt))
		}
		for i, id := range got.Owned {
			seen[entry{"owned", fmt.Sprintf("%s@%d", id, got.OwnedAt[i])}]++
		}
		for _, id := range got.Kick {
			seen[entry{"kick", id}]++
		}
		for _, s := range got.Settled {
			seen[entry{"settled", s[0] + "/" + s[1]}]++
		}
		for _, id := range got.Gone {
			seen[entry{"gone", id}]++
		}
		for _, id := range got.Creds {
			seen[entry{"creds", id}]++
		}
	}
	if !feedback {
		t.Error("the feedback flag was lost in the split")
	}
	for i := range 300 {
		id := fmt.Sprintf("device-with-a-longish-name-%04d", i)
		for _, e := range []entry{{"kick", id}, {"settled", id + "/message-" + id}, {"gone", id},
			{"owned", fmt.Sprintf("%s@%d", id, 1000+i)}, {"creds", id}} {
			if n := seen[e]; n != 1 {
				t.Fatalf("%s %s in %d payloads, want 1", e.list, e.value, n)
			}
		}
	}
}

// A wake-up of exactly the limit goes out in one payload.
func TestSplitKeepsAPayloadOfExactlyTheLimitWhole(t *testing.T) {
	w := wake{Node: "a", Kick: []string{""}}
	b, _ := json.Marshal(w)
	w.Kick[0] = fmt.Sprintf("%0*d", maxNotifyPayload-len(b), 0)
	if b, _ := json.Marshal(w); len(b) != maxNotifyPayload {
		t.Fatalf("test payload of %d bytes", len(b))
	}
	if parts := split(w); len(parts) != 1 {
		t.Fatalf("a payload of exactly %d bytes split in %d", maxNotifyPayload, len(parts))
	}
}

// A node whose listening connection is cut (a PostgreSQL restart, a proxy's idle timeout)
// connects again and hears the other nodes' wake-ups, also those no poll recovers.
func TestClusterListenerReconnects(t *testing.T) {
	parallel(t)
	url := pgtest.DB(t)
	a, b := openNode(t, url, "a"), openNode(t, url, "b")
	desired := make(chan string, 4)
	b.OnDesiredChange(func(id string, v int64, p []byte) { desired <- id })
	ctx := ctxT(t)
	var cut int
	if err := a.st.update(ctx, func(tx storeTx) error {
		return tx.(*sqlTx).tx.QueryRowContext(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
			WHERE datname = current_database() AND query = 'LISTEN '||$1 AND pid <> pg_backend_pid()`, pgChannel).Scan(&cut)
	}); err != nil {
		t.Fatal(err)
	}
	if cut != 2 {
		t.Fatalf("cut %d listening connections, want the two nodes'", cut)
	}
	for v := int64(2); ; v++ {
		a.PublishDesiredChange("pi-1", v, []byte(fmt.Sprintf(`{"$version":%d}`, v)))
		select {
		case <-desired:
			return
		case <-time.After(200 * time.Millisecond): // b may not be listening again yet: announce again
		}
		if ctx.Err() != nil {
			t.Fatal("node b never heard a desired change after its listening connection was cut")
		}
	}
}
