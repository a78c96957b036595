package amqp

import (
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/amqp/internal/encoding"
	"github.com/c2d-project/c2d/cloud/amqp/internal/frames"
)

// The $cbs node as Azure's claims-based security defines it: requests on a link to $cbs, replies on
// a link from $cbs, correlated by message-id. Here the request is an operation other than
// put-token, which the hub answers at once (status 400) without checking any token.

// cbsRequest is a put-token-shaped request whose operation is op, as the peer's transfer.
func cbsRequest(t *testing.T, handle, id uint32, op string) *frames.PerformTransfer {
	t.Helper()
	payload, err := encodeMessage(&frames.Message{
		Properties:            &frames.MessageProperties{MessageID: "req-1"},
		ApplicationProperties: map[string]any{"operation": op, "type": "servicebus.windows.net:sastoken", "name": "h"},
		Value:                 "token",
	})
	if err != nil {
		t.Fatal(err)
	}
	return &frames.PerformTransfer{Handle: handle, DeliveryID: u32(id), DeliveryTag: []byte{byte(id)}, Payload: payload}
}

// cbsReplyTransfers returns the transfers among fbs and the status-code of each.
func cbsReplyTransfers(t *testing.T, fbs []frames.FrameBody) (trs []*frames.PerformTransfer, status []any) {
	t.Helper()
	for _, fb := range fbs {
		tr, ok := fb.(*frames.PerformTransfer)
		if !ok {
			continue
		}
		m, err := decodeMessage(tr.Payload)
		if err != nil {
			t.Fatalf("the hub's reply does not decode: %v", err)
		}
		trs = append(trs, tr)
		status = append(status, m.ApplicationProperties["status-code"])
	}
	return trs, status
}

func replyLink(handle uint32, mode encoding.SenderSettleMode) *frames.PerformAttach {
	a := cbsSource(handle)
	a.Name = "replies" + string(rune('0'+handle))
	a.SenderSettleMode = &mode
	return a
}

// §2.7.3 snd-settle-mode: with "unsettled" the sender sends every delivery unsettled, with
// "settled" every delivery settled. The hub's put-token replies follow the mode of the reply link.
func TestCBSReplyFollowsTheReplyLinksSenderSettleMode(t *testing.T) {
	for _, tc := range []struct {
		mode    encoding.SenderSettleMode
		settled bool
	}{{encoding.SenderSettleModeUnsettled, false}, {encoding.SenderSettleModeSettled, true}} {
		h := newFlowHarness(t, encoding.RoleSender)
		h.begin(10)
		h.peer(replyLink(0, tc.mode), cbsTarget(1, 0))
		h.peer(&frames.PerformFlow{NextIncomingID: u32(0), IncomingWindow: 100, OutgoingWindow: 100, Handle: u32(0), DeliveryCount: u32(0), LinkCredit: u32(10)})
		h.sent()
		h.peer(cbsRequest(t, 1, 0, "delete-token"))
		trs, status := cbsReplyTransfers(t, h.sent())
		if len(trs) != 1 || status[0] != int32(400) {
			t.Fatalf("snd-settle-mode %v: replies %v, want one with status 400", tc.mode, status)
		}
		if trs[0].Settled != tc.settled {
			t.Fatalf("snd-settle-mode %v: reply settled=%v, want %v", tc.mode, trs[0].Settled, tc.settled)
		}
	}
}

// The replies go to the reply link the peer has attached: when an older reply link detaches, the
// replies keep going to the newer one; with none attached, the request is accepted and no reply
// is sent (and the connection stays up).
func TestCBSRepliesGoToTheAttachedReplyLink(t *testing.T) {
	h := newFlowHarness(t, encoding.RoleSender)
	h.begin(10)
	h.peer(replyLink(0, encoding.SenderSettleModeSettled), replyLink(1, encoding.SenderSettleModeSettled), cbsTarget(2, 0))
	h.peer(&frames.PerformFlow{NextIncomingID: u32(0), IncomingWindow: 100, OutgoingWindow: 100, Handle: u32(1), DeliveryCount: u32(0), LinkCredit: u32(10)})
	var hubHandle1 uint32
	for _, fb := range h.sent() {
		if a, ok := fb.(*frames.PerformAttach); ok && a.Name == "replies1" {
			hubHandle1 = a.Handle
		}
	}
	h.peer(&frames.PerformDetach{Handle: 0, Closed: true})
	h.sent()
	h.peer(cbsRequest(t, 2, 0, "delete-token"))
	trs, status := cbsReplyTransfers(t, h.sent())
	if len(trs) != 1 || status[0] != int32(400) || trs[0].Handle != hubHandle1 {
		t.Fatalf("after the older reply link detached: replies %v on %v, want one with status 400 on the hub's handle %d of the newer one", status, trs, hubHandle1)
	}
	h.peer(&frames.PerformDetach{Handle: 1, Closed: true})
	h.sent()
	h.peer(cbsRequest(t, 2, 1, "delete-token"))
	got := h.sent()
	if trs, _ := cbsReplyTransfers(t, got); len(trs) != 0 {
		t.Fatalf("with no reply link attached the hub sent replies %v", trs)
	}
	if len(got) != 1 {
		t.Fatalf("with no reply link attached the hub sent %v, want only the request's disposition", got)
	}
	if d, ok := got[0].(*frames.PerformDisposition); !ok || d.First != 1 {
		t.Fatalf("with no reply link attached the hub sent %v, want the request's disposition", got[0])
	}
}

// A put-token's token is the message's value, or its first data section; a request with neither
// carries an empty token, which is refused with status 401 like any token that does not parse.
func TestCBSPutTokenWithoutABodyIsRefused(t *testing.T) {
	h := newFlowHarness(t, encoding.RoleSender)
	h.begin(10)
	h.peer(replyLink(0, encoding.SenderSettleModeSettled), cbsTarget(1, 0))
	h.peer(&frames.PerformFlow{NextIncomingID: u32(0), IncomingWindow: 100, OutgoingWindow: 100, Handle: u32(0), DeliveryCount: u32(0), LinkCredit: u32(10)})
	h.sent()
	payload, err := encodeMessage(&frames.Message{
		Properties:            &frames.MessageProperties{MessageID: "req-1"},
		ApplicationProperties: map[string]any{"operation": "put-token", "type": "servicebus.windows.net:sastoken", "name": "h"},
	})
	if err != nil {
		t.Fatal(err)
	}
	h.peer(&frames.PerformTransfer{Handle: 1, DeliveryID: u32(0), DeliveryTag: []byte{0}, Payload: payload})
	// The token is checked on another goroutine; every frame queued signals outWake (the writer
	// is not running here), so wait on it until the reply is in the queue.
	var got []frames.FrameBody
	deadline := time.After(10 * time.Second)
	for {
		got = append(got, h.sent()...)
		if trs, status := cbsReplyTransfers(t, got); len(trs) > 0 {
			if len(trs) != 1 || status[0] != int32(401) {
				t.Fatalf("put-token without a body: replies %v, want one with status 401", status)
			}
			return
		}
		select {
		case <-h.c.outWake:
		case <-deadline:
			t.Fatalf("put-token without a body: no reply within 10 s (sent %v)", got)
		}
	}
}
