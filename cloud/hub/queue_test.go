package hub

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
)

func TestCompleteProducesSuccessFeedback(t *testing.T) {
	h := newTestHub(t, testConfig())
	dev := mustDevice(t, h, "dev1")
	res := mustSend(t, h, "dev1", iothub.SendRequest{
		MessageID: "m1", CorrelationID: "c1", Ack: iothub.AckFull,
		Properties: []iothub.AppProperty{{Name: "led", Value: "on"}}, Body: []byte("hi"),
	})
	if res.SequenceNumber != 1 || res.MessageID != "m1" {
		t.Fatalf("SendResult = %+v", res)
	}
	if got := res.ExpiryTimeUTC.Sub(res.EnqueuedTimeUTC); got != DefaultTTL {
		t.Fatalf("default expiry is %v after enqueue, want %v", got, DefaultTTL)
	}
	c := newConn("dev1")
	h.Attach(c)
	m := c.next(t)
	if m.MessageID != "m1" || string(m.Body) != "hi" || len(m.LockToken) != 17 || strings.ContainsAny(m.LockToken, "/+#") {
		t.Fatalf("delivered %+v", m)
	}
	if v, _ := m.Property("led"); v != "on" {
		t.Fatalf("property led = %q", v)
	}
	if !m.ExpiryTime.IsZero() {
		t.Fatalf("$.exp delivered for a message without explicit expiry: %v", m.ExpiryTime)
	}
	st, err := h.MessageStatus(context.Background(), "dev1", "m1")
	if err != nil || st.State != iothub.StateInvisible || st.DeliveryCount != 1 || st.LockedUntilUTC == nil {
		t.Fatalf("status while delivered = %+v, %v", st, err)
	}
	settle(t, h, "dev1", m, iothub.DispositionComplete, "")
	st = waitSettled(t, h, "dev1", "m1")
	if st.State != iothub.StateCompleted || st.Outcome != iothub.StatusSuccess || st.SettledTimeUTC == nil {
		t.Fatalf("settled status = %+v", st)
	}
	recs := receiveRecords(t, h, 1)
	want := iothub.FeedbackRecord{
		OriginalMessageID: "m1", DeviceID: "dev1", DeviceGenerationID: dev.GenerationID,
		EnqueuedTimeUTC: res.EnqueuedTimeUTC, StatusCode: iothub.StatusSuccess,
		Description: iothub.FeedbackDescription(iothub.StatusSuccess), DeliveryCount: 1, CorrelationID: "c1",
	}
	// Azure: the record's enqueuedTimeUtc is when the outcome happened, not when the message was
	// sent.
	if want.EnqueuedTimeUTC = *st.SettledTimeUTC; !recs[0].EnqueuedTimeUTC.Equal(want.EnqueuedTimeUTC) {
		t.Fatalf("record enqueued time %v, want the outcome's time %v (sent %v)", recs[0].EnqueuedTimeUTC, want.EnqueuedTimeUTC, res.EnqueuedTimeUTC)
	}
	recs[0].EnqueuedTimeUTC = want.EnqueuedTimeUTC
	if recs[0] != want {
		t.Fatalf("record = %+v\nwant     %+v", recs[0], want)
	}
	if err := h.Settle(context.Background(), "dev1", m.LockToken, iothub.DispositionComplete, ""); err == nil {
		t.Fatal("second complete of the same delivery succeeded")
	} else {
		wantCode(t, err, ErrLockLost, iothub.CodeDeviceMessageLockLost)
	}
	q, err := h.Queue(context.Background(), "dev1")
	if err != nil || len(q) != 0 {
		t.Fatalf("queue after complete = %v, %v", q, err)
	}
}

func TestRejectKeepsReason(t *testing.T) {
	h := newTestHub(t, testConfig())
	mustDevice(t, h, "dev1")
	mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "m1", Ack: iothub.AckNegative})
	mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "m2", Ack: iothub.AckNegative})
	c := newConn("dev1")
	h.Attach(c)
	m1, m2 := c.next(t), c.next(t)
	settle(t, h, "dev1", m1, iothub.DispositionReject, "pin GPIO99 is not declared")
	long := strings.Repeat("é", iothub.MaxReasonLength) // 2 bytes each: truncated at a rune boundary
	settle(t, h, "dev1", m2, iothub.DispositionReject, long)
	st := waitSettled(t, h, "dev1", "m1")
	if st.State != iothub.StateDeadLettered || st.Outcome != iothub.StatusRejected || st.Reason != "pin GPIO99 is not declared" {
		t.Fatalf("status = %+v", st)
	}
	recs := receiveRecords(t, h, 2)
	if recs[0].StatusCode != iothub.StatusRejected || recs[0].Reason != "pin GPIO99 is not declared" {
		t.Fatalf("record = %+v", recs[0])
	}
	if r := recs[1].Reason; len(r) != iothub.MaxReasonLength || r != long[:iothub.MaxReasonLength] {
		t.Fatalf("long reason kept as %d bytes, want %d", len(r), iothub.MaxReasonLength)
	}
}

func TestAbandonRedeliversWithIncrementedCount(t *testing.T) {
	h := newTestHub(t, testConfig())
	mustDevice(t, h, "dev1")
	mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "m1"})
	c := newConn("dev1")
	h.Attach(c)
	first := c.next(t)
	settle(t, h, "dev1", first, iothub.DispositionAbandon, "")
	second := c.next(t)
	if second.MessageID != "m1" || second.LockToken == first.LockToken {
		t.Fatalf("redelivery %s token %s (first token %s)", second.MessageID, second.LockToken, first.LockToken)
	}
	st, _ := h.MessageStatus(context.Background(), "dev1", "m1")
	if st.DeliveryCount != 2 || st.State != iothub.StateInvisible {
		t.Fatalf("after redelivery: %+v", st)
	}
	err := h.Settle(context.Background(), "dev1", first.LockToken, iothub.DispositionComplete, "")
	wantCode(t, err, ErrLockLost, iothub.CodeDeviceMessageLockLost)
	settle(t, h, "dev1", second, iothub.DispositionComplete, "")
	if st := waitSettled(t, h, "dev1", "m1"); st.Outcome != iothub.StatusSuccess || st.DeliveryCount != 2 {
		t.Fatalf("final: %+v", st)
	}
}

func TestLockExpiryRedelivers(t *testing.T) {
	cfg := testConfig()
	cfg.LockTimeout = 200 * time.Millisecond
	h := newTestHub(t, cfg)
	mustDevice(t, h, "dev1")
	mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "m1"})
	c := newConn("dev1")
	h.Attach(c)
	first := c.next(t)
	second := c.next(t) // the lock expired: the timer returned it to the queue, then it was redelivered
	if second.MessageID != "m1" || second.LockToken == first.LockToken {
		t.Fatalf("redelivery %+v", second)
	}
	err := h.Settle(context.Background(), "dev1", first.LockToken, iothub.DispositionComplete, "")
	wantCode(t, err, ErrLockLost, iothub.CodeDeviceMessageLockLost)
	settle(t, h, "dev1", second, iothub.DispositionComplete, "")
	if st := waitSettled(t, h, "dev1", "m1"); st.DeliveryCount != 2 || st.Outcome != iothub.StatusSuccess {
		t.Fatalf("final: %+v", st)
	}
}

func TestDeliveryCountExceeded(t *testing.T) {
	cfg := testConfig()
	cfg.MaxDeliveryCount = 2
	h := newTestHub(t, cfg)
	mustDevice(t, h, "dev1")
	mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "m1", Ack: iothub.AckNegative})
	c := newConn("dev1")
	h.Attach(c)
	settle(t, h, "dev1", c.next(t), iothub.DispositionAbandon, "")
	settle(t, h, "dev1", c.next(t), iothub.DispositionAbandon, "")
	st := waitSettled(t, h, "dev1", "m1")
	if st.State != iothub.StateDeadLettered || st.Outcome != iothub.StatusDeliveryCountExceeded || st.DeliveryCount != 2 {
		t.Fatalf("status = %+v", st)
	}
	c.none(t, 100*time.Millisecond)
	recs := receiveRecords(t, h, 1)
	if recs[0].StatusCode != iothub.StatusDeliveryCountExceeded || recs[0].DeliveryCount != 2 {
		t.Fatalf("record = %+v", recs[0])
	}
}

func TestTTLExpiresWhileOffline(t *testing.T) {
	parallel(t)
	h := newTestHub(t, testConfig())
	mustDevice(t, h, "dev1")
	exp := time.Now().Add(time.Second)
	res := mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "m1", Ack: iothub.AckFull, ExpiryTimeUTC: &exp})
	if !res.ExpiryTimeUTC.Equal(exp.UTC().Truncate(time.Millisecond)) {
		t.Fatalf("expiry %v, want %v", res.ExpiryTimeUTC, exp)
	}
	// No connection: only the timer can expire it.
	st := waitSettled(t, h, "dev1", "m1")
	if st.Outcome != iothub.StatusExpired || st.State != iothub.StateDeadLettered || st.DeliveryCount != 0 {
		t.Fatalf("status = %+v", st)
	}
	if st.SettledTimeUTC.Before(res.ExpiryTimeUTC) {
		t.Fatalf("expired at %v, before its expiry %v", st.SettledTimeUTC, res.ExpiryTimeUTC)
	}
	recs := receiveRecords(t, h, 1)
	if recs[0].StatusCode != iothub.StatusExpired || recs[0].OriginalMessageID != "m1" {
		t.Fatalf("record = %+v", recs[0])
	}
	c := newConn("dev1")
	h.Attach(c)
	c.none(t, 100*time.Millisecond)
}

func TestExplicitExpiryIsDelivered(t *testing.T) {
	h := newTestHub(t, testConfig())
	mustDevice(t, h, "dev1")
	exp := time.Now().Add(time.Hour).UTC().Truncate(time.Millisecond)
	mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "m1", ExpiryTimeUTC: &exp})
	c := newConn("dev1")
	h.Attach(c)
	if m := c.next(t); !m.ExpiryTime.Equal(exp) {
		t.Fatalf("$.exp = %v, want %v", m.ExpiryTime, exp)
	}
}

func TestQueueFull(t *testing.T) {
	cfg := testConfig()
	cfg.MaxQueueDepth = 3
	h := newTestHub(t, cfg)
	mustDevice(t, h, "dev1")
	for i := range 3 {
		mustSend(t, h, "dev1", iothub.SendRequest{MessageID: fmt.Sprint("m", i)})
	}
	_, err := h.Send(context.Background(), "dev1", iothub.SendRequest{MessageID: "m3"})
	ie := wantCode(t, err, ErrQueueFull, iothub.CodeDeviceMaximumQueueDepthExceeded)
	if want := "device dev1 has 3 messages pending (limit 3): purge its queue or wait for it to drain"; ie.Detail != want {
		t.Fatalf("detail %q\nwant   %q", ie.Detail, want)
	}
	// Invisible messages count too; a completion frees a place.
	c := newConn("dev1")
	h.Attach(c)
	m := c.next(t)
	if _, err := h.Send(context.Background(), "dev1", iothub.SendRequest{MessageID: "m3"}); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("send with 2 Enqueued + 1 Invisible: %v", err)
	}
	settle(t, h, "dev1", m, iothub.DispositionComplete, "")
	mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "m3"})
	d, _ := h.GetDevice(context.Background(), "dev1")
	if d.CloudToDeviceMessageCount != 3 {
		t.Fatalf("cloudToDeviceMessageCount = %d", d.CloudToDeviceMessageCount)
	}
}

func TestPurge(t *testing.T) {
	h := newTestHub(t, testConfig())
	mustDevice(t, h, "dev1")
	for _, a := range []iothub.AckMode{iothub.AckNone, iothub.AckPositive, iothub.AckNegative, iothub.AckFull} {
		mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "m-" + string(a), Ack: a})
	}
	c := newConn("dev1")
	h.Attach(c)
	delivered := c.next(t) // m-none is Invisible now; purge takes it too
	res, err := h.Purge(context.Background(), "dev1")
	if err != nil || res != (iothub.PurgeResult{DeviceID: "dev1", TotalMessagesPurged: 4}) {
		t.Fatalf("Purge = %+v, %v", res, err)
	}
	for _, a := range []string{"none", "positive", "negative", "full"} {
		st := waitSettled(t, h, "dev1", "m-"+a)
		if st.State != iothub.StatePurged || st.Outcome != iothub.StatusPurged {
			t.Fatalf("m-%s: %+v", a, st)
		}
	}
	err = h.Settle(context.Background(), "dev1", delivered.LockToken, iothub.DispositionComplete, "")
	wantCode(t, err, ErrLockLost, iothub.CodeDeviceMessageLockLost)
	recs := receiveRecords(t, h, 2)
	got := map[string]iothub.FeedbackStatus{}
	for _, r := range recs {
		got[r.OriginalMessageID] = r.StatusCode
	}
	if len(got) != 2 || got["m-negative"] != iothub.StatusPurged || got["m-full"] != iothub.StatusPurged {
		t.Fatalf("purge feedback = %v", got)
	}
	noFeedback(t, h, 200*time.Millisecond)
	if _, err := h.Purge(context.Background(), "nope"); !errors.Is(err, ErrDeviceNotFound) {
		t.Fatalf("purge unknown device: %v", err)
	}
}

func TestAckModesProduceExactlyTheRightRecords(t *testing.T) {
	h := newTestHub(t, testConfig())
	mustDevice(t, h, "dev1")
	modes := []iothub.AckMode{"", iothub.AckNone, iothub.AckPositive, iothub.AckNegative, iothub.AckFull}
	for _, a := range modes {
		mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "ok-" + string(a), Ack: a})
		mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "rej-" + string(a), Ack: a})
	}
	c := newConn("dev1")
	h.Attach(c)
	for range 2 * len(modes) {
		m := c.next(t)
		if strings.HasPrefix(m.MessageID, "ok-") {
			settle(t, h, "dev1", m, iothub.DispositionComplete, "")
		} else {
			settle(t, h, "dev1", m, iothub.DispositionReject, "no")
		}
	}
	recs := receiveRecords(t, h, 4)
	got := map[string]iothub.FeedbackStatus{}
	for _, r := range recs {
		if _, dup := got[r.OriginalMessageID]; dup {
			t.Fatalf("two records for %s", r.OriginalMessageID)
		}
		got[r.OriginalMessageID] = r.StatusCode
	}
	want := map[string]iothub.FeedbackStatus{
		"ok-positive": iothub.StatusSuccess, "ok-full": iothub.StatusSuccess,
		"rej-negative": iothub.StatusRejected, "rej-full": iothub.StatusRejected,
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("records %v, want %v", got, want)
	}
	noFeedback(t, h, 200*time.Millisecond)
}

func TestFeedbackBatchingAndAbandon(t *testing.T) {
	cfg := testConfig()
	cfg.FeedbackBatchSize = 3
	cfg.FeedbackInterval = time.Hour // only full batches form
	cfg.FeedbackMaxDeliveryCount = 2
	h := newTestHub(t, cfg)
	mustDevice(t, h, "dev1")
	c := newConn("dev1")
	h.Attach(c)
	for i := range 7 {
		mustSend(t, h, "dev1", iothub.SendRequest{MessageID: fmt.Sprint("m", i), Ack: iothub.AckPositive})
		settle(t, h, "dev1", c.next(t), iothub.DispositionComplete, "")
	}
	b1, err := h.ReceiveFeedback(ctxT(t))
	if err != nil || len(b1.Records) != 3 || b1.Records[0].OriginalMessageID != "m0" {
		t.Fatalf("first batch %+v, %v", b1, err)
	}
	if err := h.AbandonFeedback(context.Background(), b1.LockToken); err != nil {
		t.Fatal(err)
	}
	again, err := h.ReceiveFeedback(ctxT(t))
	if err != nil || again.Records[0].OriginalMessageID != "m0" || again.LockToken == b1.LockToken {
		t.Fatalf("abandoned batch not offered again first: %+v, %v", again, err)
	}
	wantCode(t, h.CompleteFeedback(context.Background(), b1.LockToken), ErrLockLost, iothub.CodeDeviceMessageLockLost)
	// Second abandon reaches feedback_max_delivery_count 2: the batch is dropped.
	if err := h.AbandonFeedback(context.Background(), again.LockToken); err != nil {
		t.Fatal(err)
	}
	b2, err := h.ReceiveFeedback(ctxT(t))
	if err != nil || len(b2.Records) != 3 || b2.Records[0].OriginalMessageID != "m3" {
		t.Fatalf("second batch %+v, %v", b2, err)
	}
	if err := h.CompleteFeedback(context.Background(), b2.LockToken); err != nil {
		t.Fatal(err)
	}
	// m6 waits for its batch (interval 1h) until a receiver asks: then it forms at once.
	if batchAvailable(t, h, time.Now()) {
		t.Fatal("m6 formed a batch with no receiver and the interval not passed")
	}
	st, _ := h.Status(context.Background())
	if st.PendingFeedbackCount != 1 {
		t.Fatalf("pending feedback %d, want 1", st.PendingFeedbackCount)
	}
	if recs := receiveRecords(t, h, 1); len(recs) != 1 || recs[0].OriginalMessageID != "m6" {
		t.Fatalf("last batch %+v, want m6 alone", recs)
	}
}

func TestFeedbackLockExpiryOffersBatchAgain(t *testing.T) {
	cfg := testConfig()
	cfg.FeedbackLockTimeout = 200 * time.Millisecond
	h := newTestHub(t, cfg)
	mustDevice(t, h, "dev1")
	mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "m1", Ack: iothub.AckFull})
	c := newConn("dev1")
	h.Attach(c)
	settle(t, h, "dev1", c.next(t), iothub.DispositionComplete, "")
	b1, err := h.ReceiveFeedback(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	b2, err := h.ReceiveFeedback(ctxT(t)) // blocks until the lock of b1 expires
	if err != nil || b2.Records[0].OriginalMessageID != "m1" || b2.LockToken == b1.LockToken {
		t.Fatalf("after lock expiry: %+v, %v", b2, err)
	}
	wantCode(t, h.CompleteFeedback(context.Background(), b1.LockToken), ErrLockLost, iothub.CodeDeviceMessageLockLost)
	if err := h.CompleteFeedback(context.Background(), b2.LockToken); err != nil {
		t.Fatal(err)
	}
}

func TestFIFOAndMaxInFlightWithOutOfOrderSettles(t *testing.T) {
	cfg := testConfig()
	cfg.MaxInFlight = 3
	h := newTestHub(t, cfg)
	mustDevice(t, h, "dev1")
	for i := range 10 {
		mustSend(t, h, "dev1", iothub.SendRequest{MessageID: fmt.Sprint("m", i)})
	}
	c := newConn("dev1")
	h.Attach(c)
	var held []*iothub.Message
	for i := range 3 {
		m := c.next(t)
		if m.MessageID != fmt.Sprint("m", i) {
			t.Fatalf("delivery %d is %s", i, m.MessageID)
		}
		held = append(held, m)
	}
	c.none(t, 100*time.Millisecond) // max_in_flight reached
	next := 3
	for len(held) > 0 {
		// Settle the newest first: out of order.
		m := held[len(held)-1]
		held = held[:len(held)-1]
		settle(t, h, "dev1", m, iothub.DispositionComplete, "")
		if next < 10 {
			d := c.next(t)
			if d.MessageID != fmt.Sprint("m", next) {
				t.Fatalf("after a settle got %s, want m%d", d.MessageID, next)
			}
			next++
			held = append([]*iothub.Message{d}, held...)
		}
	}
	for i := range 10 {
		if st := waitSettled(t, h, "dev1", fmt.Sprint("m", i)); st.Outcome != iothub.StatusSuccess {
			t.Fatalf("m%d: %+v", i, st)
		}
	}
}

func TestDetachReturnsMessagesAndReattachRedelivers(t *testing.T) {
	h := newTestHub(t, testConfig())
	mustDevice(t, h, "dev1")
	for i := range 3 {
		mustSend(t, h, "dev1", iothub.SendRequest{MessageID: fmt.Sprint("m", i)})
	}
	c1 := newConn("dev1")
	h.Attach(c1)
	m0 := c1.next(t)
	c1.next(t)
	c1.next(t)
	settle(t, h, "dev1", m0, iothub.DispositionComplete, "")
	h.Detach(c1)
	q, _ := h.Queue(context.Background(), "dev1")
	if len(q) != 2 || q[0].State != iothub.StateEnqueued || q[1].State != iothub.StateEnqueued || q[0].DeliveryCount != 1 {
		t.Fatalf("queue after detach: %+v", q)
	}
	if d, _ := h.GetDevice(context.Background(), "dev1"); d.ConnectionState != "Disconnected" || d.ConnectionStateUpdatedTime.IsZero() {
		t.Fatalf("device after detach: %+v", d)
	}
	c2 := newConn("dev1")
	h.Attach(c2)
	if d, _ := h.GetDevice(context.Background(), "dev1"); d.ConnectionState != "Connected" {
		t.Fatalf("connection state %q", d.ConnectionState)
	}
	if m := c2.next(t); m.MessageID != "m1" {
		t.Fatalf("first redelivery %s", m.MessageID)
	}
	if m := c2.next(t); m.MessageID != "m2" {
		t.Fatalf("second redelivery %s", m.MessageID)
	}
	// A third connection replaces the second; nothing more reaches c2.
	c3 := newConn("dev1")
	h.Attach(c3)
	c3.next(t)
	c3.next(t)
	h.Detach(c2) // stale: ignored
	mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "m3"})
	if m := c3.next(t); m.MessageID != "m3" {
		t.Fatalf("got %s", m.MessageID)
	}
	c2.none(t, 50*time.Millisecond)
}

func TestDeliverErrorReturnsMessage(t *testing.T) {
	h := newTestHub(t, testConfig())
	mustDevice(t, h, "dev1")
	c := newConn("dev1")
	c.setFail(errors.New("connection reset"))
	h.Attach(c)
	mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "m1"})
	deadline := time.Now().Add(waitLimit)
	for {
		q, _ := h.Queue(context.Background(), "dev1")
		if len(q) == 1 && q[0].State == iothub.StateEnqueued && q[0].DeliveryCount == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("message not back in the queue after a failed Deliver: %+v", q)
		}
		time.Sleep(10 * time.Millisecond) // polling a condition with a deadline
	}
	h.Detach(c)
	c2 := newConn("dev1")
	h.Attach(c2)
	if m := c2.next(t); m.MessageID != "m1" {
		t.Fatalf("got %s", m.MessageID)
	}
}

func TestLockedMessageWhoseTTLPassesCanStillComplete(t *testing.T) {
	parallel(t)
	h := newTestHub(t, testConfig())
	mustDevice(t, h, "dev1")
	exp := time.Now().Add(time.Second)
	mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "m1", ExpiryTimeUTC: &exp})
	mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "m2", ExpiryTimeUTC: &exp})
	c := newConn("dev1")
	h.Attach(c)
	m1, m2 := c.next(t), c.next(t)
	// Wait until the expiry has passed (by the hub's clock) while both are locked.
	if st := waitFor(t, func() bool { return time.Now().After(exp.Add(50 * time.Millisecond)) }); !st {
		t.Fatal("clock did not advance")
	}
	settle(t, h, "dev1", m1, iothub.DispositionComplete, "")
	if st := waitSettled(t, h, "dev1", "m1"); st.Outcome != iothub.StatusSuccess {
		t.Fatalf("m1: %+v", st)
	}
	settle(t, h, "dev1", m2, iothub.DispositionAbandon, "")
	if st := waitSettled(t, h, "dev1", "m2"); st.Outcome != iothub.StatusExpired {
		t.Fatalf("abandoned after expiry: %+v", st)
	}
}

// waitFor polls cond until true or waitLimit.
func waitFor(t *testing.T, cond func() bool) bool {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

func TestSendValidation(t *testing.T) {
	h := newTestHub(t, testConfig())
	mustDevice(t, h, "dev1")
	ctx := context.Background()
	soon := time.Now().Add(100 * time.Millisecond)
	_, err := h.Send(ctx, "dev1", iothub.SendRequest{ExpiryTimeUTC: &soon})
	ie := wantCode(t, err, ErrInvalidArgument, iothub.CodeArgumentInvalid)
	if !strings.Contains(ie.Detail, "expiryTimeUtc") {
		t.Fatalf("detail %q does not name expiryTimeUtc", ie.Detail)
	}
	far := time.Now().Add(49 * time.Hour)
	_, err = h.Send(ctx, "dev1", iothub.SendRequest{ExpiryTimeUTC: &far})
	wantCode(t, err, ErrInvalidArgument, iothub.CodeArgumentInvalid)
	_, err = h.Send(ctx, "dev1", iothub.SendRequest{Body: make([]byte, iothub.MaxMessageSize+1)})
	wantCode(t, err, ErrInvalidArgument, iothub.CodeMessageTooLarge)
	_, err = h.Send(ctx, "dev1", iothub.SendRequest{Ack: "sometimes"})
	wantCode(t, err, ErrInvalidArgument, iothub.CodeArgumentInvalid)
	_, err = h.Send(ctx, "dev1", iothub.SendRequest{Properties: []iothub.AppProperty{{Name: "bad name", Value: "x"}}})
	wantCode(t, err, ErrInvalidArgument, iothub.CodeArgumentInvalid)
	_, err = h.Send(ctx, "bad/id", iothub.SendRequest{})
	wantCode(t, err, ErrInvalidArgument, iothub.CodeArgumentInvalid)
	_, err = h.Send(ctx, "ghost", iothub.SendRequest{})
	wantCode(t, err, ErrDeviceNotFound, iothub.CodeDeviceNotFound)

	r1 := mustSend(t, h, "dev1", iothub.SendRequest{})
	r2 := mustSend(t, h, "dev1", iothub.SendRequest{})
	if len(r1.MessageID) != 36 || r1.MessageID == r2.MessageID || r2.SequenceNumber != r1.SequenceNumber+1 {
		t.Fatalf("generated ids %q %q, seq %d %d", r1.MessageID, r2.MessageID, r1.SequenceNumber, r2.SequenceNumber)
	}
	_, err = h.MessageStatus(ctx, "dev1", "nope")
	wantCode(t, err, ErrMessageNotFound, iothub.CodeDeviceMessageNotFound)
}

func TestWaitSettledReturnsOnContextEnd(t *testing.T) {
	h := newTestHub(t, testConfig())
	mustDevice(t, h, "dev1")
	mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "m1"})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	st, err := h.WaitSettled(ctx, "dev1", "m1")
	if !errors.Is(err, context.DeadlineExceeded) || st.State != iothub.StateEnqueued {
		t.Fatalf("WaitSettled = %+v, %v", st, err)
	}
}

func TestClosedHub(t *testing.T) {
	h, err := Open(context.Background(), t.TempDir(), testConfig(), Events{})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); !errors.Is(err, ErrClosed) {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := h.Send(context.Background(), "dev1", iothub.SendRequest{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Send after Close: %v", err)
	}
	if _, err := h.GetDevice(context.Background(), "dev1"); !errors.Is(err, ErrClosed) {
		t.Fatalf("GetDevice after Close: %v", err)
	}
}

func TestConcurrentSendsRespectQueueDepth(t *testing.T) {
	cfg := testConfig()
	cfg.MaxQueueDepth = 10
	h := newTestHub(t, cfg)
	mustDevice(t, h, "dev1")
	const senders = 25
	type result struct {
		seq int64
		err error
	}
	results := make(chan result, senders)
	for i := range senders {
		go func() {
			r, err := h.Send(context.Background(), "dev1", iothub.SendRequest{MessageID: fmt.Sprint("m", i)})
			results <- result{r.SequenceNumber, err}
		}()
	}
	seqs := map[int64]bool{}
	full := 0
	for range senders {
		r := <-results
		switch {
		case r.err == nil:
			if seqs[r.seq] {
				t.Fatalf("sequence number %d given twice", r.seq)
			}
			seqs[r.seq] = true
		case errors.Is(r.err, ErrQueueFull):
			full++
		default:
			t.Fatal(r.err)
		}
	}
	if len(seqs) != 10 || full != senders-10 {
		t.Fatalf("%d accepted, %d refused as full", len(seqs), full)
	}
	for s := int64(1); s <= 10; s++ {
		if !seqs[s] {
			t.Fatalf("sequence numbers %v: %d missing", seqs, s)
		}
	}
	q, _ := h.Queue(context.Background(), "dev1")
	if len(q) != 10 {
		t.Fatalf("queue holds %d", len(q))
	}
}

func TestEvents(t *testing.T) {
	type ev struct {
		kind, dev string
		outcome   iothub.FeedbackStatus
		connected bool
	}
	ch := make(chan ev, 100)
	cfg := testConfig()
	h, err := Open(context.Background(), t.TempDir(), cfg, Events{
		Sent:      func(d string) { ch <- ev{kind: "sent", dev: d} },
		Delivered: func(d string) { ch <- ev{kind: "delivered", dev: d} },
		Settled: func(d string, o iothub.FeedbackStatus, took time.Duration) {
			if took < 0 {
				t.Errorf("negative send-to-settle %v", took)
			}
			ch <- ev{kind: "settled", dev: d, outcome: o}
		},
		Abandoned: func(d string) { ch <- ev{kind: "abandoned", dev: d} },
		Connected: func(d string, c bool) { ch <- ev{kind: "connected", dev: d, connected: c} },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	mustDevice(t, h, "dev1")
	c := newConn("dev1")
	h.Attach(c)
	mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "m1"})
	settle(t, h, "dev1", c.next(t), iothub.DispositionAbandon, "")
	settle(t, h, "dev1", c.next(t), iothub.DispositionReject, "no")
	waitSettled(t, h, "dev1", "m1")
	h.Detach(c)
	want := []ev{
		{kind: "connected", dev: "dev1", connected: true},
		{kind: "sent", dev: "dev1"},
		{kind: "delivered", dev: "dev1"},
		{kind: "abandoned", dev: "dev1"},
		{kind: "delivered", dev: "dev1"},
		{kind: "settled", dev: "dev1", outcome: iothub.StatusRejected},
		{kind: "connected", dev: "dev1", connected: false},
	}
	for i, w := range want {
		select {
		case got := <-ch:
			// "sent" and the first "delivered" may swap: delivery can start before Send returns.
			// "abandoned" and the redelivery may swap too: a dispatch round already running can
			// pick the requeued message up as soon as the abandon committed, before the abandon's
			// events run.
			swapped := (i <= 2 && (got.kind == "sent" || got.kind == "delivered")) ||
				((i == 3 || i == 4) && (got.kind == "abandoned" || got.kind == "delivered"))
			if got != w && !swapped {
				t.Fatalf("event %d = %+v, want %+v", i, got, w)
			}
		case <-time.After(waitLimit):
			t.Fatalf("event %d (%+v) missing", i, w)
		}
	}
}

// strictConn fails the test if Deliver is called after Detach(c) returned.
type strictConn struct {
	*recConn
	t        *testing.T
	detached atomic.Bool
}

func (c *strictConn) Deliver(m *iothub.Message) error {
	if c.detached.Load() {
		c.t.Errorf("Deliver(%s) to a detached connection", m.MessageID)
	}
	return c.recConn.Deliver(m)
}

func TestNoDeliveryAfterDetachUnderChurn(t *testing.T) {
	cfg := testConfig()
	cfg.MaxQueueDepth = 1000
	h := newTestHub(t, cfg)
	mustDevice(t, h, "dev1")
	stop := make(chan struct{})
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := h.Send(context.Background(), "dev1", iothub.SendRequest{MessageID: fmt.Sprint("m", i)}); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	// Settle whatever arrives, from another goroutine, as a broker would.
	settleAll := func(c *strictConn) {
		for m := range c.ch {
			_ = h.Settle(context.Background(), "dev1", m.LockToken, iothub.DispositionComplete, "")
		}
	}
	for range 30 {
		c := &strictConn{recConn: newConn("dev1"), t: t}
		go settleAll(c)
		h.Attach(c)
		c.next(t) // at least one delivery per attachment
		h.Detach(c)
		c.detached.Store(true)
		close(c.ch)
	}
	close(stop)
	<-sent
	// Everything not completed is back in the queue (nothing stuck Invisible for a gone conn).
	q, _ := h.Queue(context.Background(), "dev1")
	for _, m := range q {
		if m.State != iothub.StateEnqueued {
			t.Fatalf("%s is %s with no connection", m.MessageID, m.State)
		}
	}
}

func TestSettledOutcomesArePrunedAfterRetention(t *testing.T) {
	parallel(t)
	cfg := testConfig()
	cfg.SettledRetention = time.Second
	h := newTestHub(t, cfg)
	mustDevice(t, h, "dev1")
	mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "m1"})
	c := newConn("dev1")
	h.Attach(c)
	settle(t, h, "dev1", c.next(t), iothub.DispositionComplete, "")
	if st := waitSettled(t, h, "dev1", "m1"); st.Outcome != iothub.StatusSuccess {
		t.Fatalf("%+v", st)
	}
	ok := waitFor(t, func() bool {
		_, err := h.MessageStatus(context.Background(), "dev1", "m1")
		return errors.Is(err, ErrMessageNotFound)
	})
	if !ok {
		t.Fatal("settled outcome still there long after settled_retention")
	}
}

func TestLockExpiryCountsTowardMaxDeliveryCount(t *testing.T) {
	parallel(t)
	cfg := testConfig()
	cfg.LockTimeout = 200 * time.Millisecond
	cfg.MaxDeliveryCount = 1
	h := newTestHub(t, cfg)
	mustDevice(t, h, "dev1")
	mustSend(t, h, "dev1", iothub.SendRequest{MessageID: "m1", Ack: iothub.AckNegative})
	c := newConn("dev1")
	h.Attach(c)
	c.next(t) // never settled: the device "crashed" on it
	st := waitSettled(t, h, "dev1", "m1")
	if st.Outcome != iothub.StatusDeliveryCountExceeded || st.DeliveryCount != 1 {
		t.Fatalf("%+v", st)
	}
	if recs := receiveRecords(t, h, 1); recs[0].StatusCode != iothub.StatusDeliveryCountExceeded {
		t.Fatalf("%+v", recs)
	}
	c.none(t, 100*time.Millisecond)
}
