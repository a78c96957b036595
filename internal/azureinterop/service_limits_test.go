package azureinterop

import (
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/c2d-project/c2d/internal/testproc"
)

// Azure's service SDK at the edges of the AMQP contract (service-limits.js), as its caller sees
// them: a wrong key fails the send with UnauthorizedError and stores nothing, while the hub goes on
// serving; a send to a full queue fails with DeviceMaximumQueueDepthExceededError and stores
// nothing; and the SDK's own token renewal (its timer and re-signing, run within seconds instead of
// 45 minutes) keeps one connection sending, and its feedback link attached, past its first token's
// expiry.
func TestServiceSDKLimits(t *testing.T) {
	const depth = 3
	h := &hub{testproc.StartHub(t, hubBin, testproc.HubOptions{
		Config: "queue:\n  max_queue_depth: " + strconv.Itoa(depth) + "\n",
		Args: []string{"--hostname", "localhost", "--log-level", "debug",
			"--mqtt", "off", "--mqtts", "off", "--http", "127.0.0.1:0", "--https", "off", "--amqps", "127.0.0.1:0"}})}
	ctx := ctxT(t, 90*time.Second)
	full, renew := h.createDevice(t, ctx, "sdk-full"), h.createDevice(t, ctx, "sdk-renew")
	steps := runScript(t, h.Hub, "service-limits.js",
		"HUB_HOST=localhost", "OWNER_KEY="+h.Owner.SharedAccessKey, "AMQPS_PORT="+port(h.Endpoints.AMQPS),
		"FULL_DEVICE="+full.DeviceID, "RENEW_DEVICE="+renew.DeviceID, "QUEUE_DEPTH="+strconv.Itoa(depth),
		// Tokens of 4 s renewed every second: three seconds of slack for a loaded machine.
		"TOKEN_SECONDS=4", "RENEW_MS=1000", "NODE_EXTRA_CA_CERTS="+h.Endpoints.CA)

	if b := find(steps, "bad-key-send"); len(b) != 1 || b[0].Cause != "UnauthorizedError" || !strings.Contains(b[0].Detail, "signature") {
		t.Errorf("send with a wrong key: %+v, want UnauthorizedError (inside the SDK's Error) saying the signature does not match", b)
	}
	if f := find(steps, "fill"); len(f) != depth || f[0].Error != "" {
		t.Errorf("sends up to the queue's depth: %+v", f)
	}
	if o := find(steps, "over-full"); len(o) != 1 || o[0].Name != "DeviceMaximumQueueDepthExceededError" {
		t.Errorf("send to a full queue: %+v, want DeviceMaximumQueueDepthExceededError", o)
	}
	queued := func(id string) []string {
		q, err := h.Client.Queue(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, m := range q {
			ids = append(ids, m.MessageID)
		}
		slices.Sort(ids)
		return ids
	}
	if got, want := queued(full.DeviceID), []string{"full-1", "full-2", "full-3"}; !slices.Equal(got, want) {
		t.Errorf("queue of %s: %v, want %v (nothing from the wrong key, nothing over the depth)", full.DeviceID, got, want)
	}

	r := find(steps, "renew-send")
	if len(r) != 2 || r[0].Error != "" || r[1].Error != "" {
		t.Errorf("sends on the renewing connection: %+v, want both accepted", r)
	}
	if e := find(steps, "first-token-expired"); len(e) != 1 || e[0].PastExpiry < 1000 {
		t.Errorf("second send not after the first token's expiry: %+v", e)
	}
	if d := find(steps, "renew-disconnects"); len(d) != 1 || d[0].Delivery != 0 || len(d[0].Errors) != 0 {
		t.Errorf("the renewing client disconnected or its feedback link failed: %+v", d)
	}
	if got, want := queued(renew.DeviceID), []string{"renew-1", "renew-2"}; !slices.Equal(got, want) {
		t.Errorf("queue of %s: %v, want %v", renew.DeviceID, got, want)
	}
	// What the hub saw: the renewals came over the same connection (renewed, not accepted anew).
	if n := h.metric(t, ctx, `c2d_amqp_tokens_total{result="renewed"}`); n < 1 {
		t.Errorf("hub counted %v renewed tokens, want at least 1", n)
	}
	if n := h.metric(t, ctx, `c2d_amqp_tokens_total{result="refused"}`); n != 1 {
		t.Errorf("hub counted %v refused tokens, want 1 (the wrong key)", n)
	}
	if n := h.metric(t, ctx, `c2d_amqp_tokens_total{result="accepted"}`); n != 2 {
		t.Errorf("hub counted %v first tokens, want 2 (one per good connection)", n)
	}
	if d := find(steps, "done"); len(d) != 1 {
		t.Errorf("service-limits.js did not finish: %v", names(steps))
	}
}
