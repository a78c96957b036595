package hub

import "time"

// Stage names one step of a command's path through the hub, for the per-stage latency breakdown
// (Events.Stage; c2d_stage_seconds in cloud/api; the bench's LATENCY STAGES table). The stages
// follow one command: the service's request is decoded and authorized, the message made durable,
// locked and handed to the device's connection, the device's disposition made durable, and a
// waiting feedback receiver handed the record.
type Stage string

const (
	// StageDecodeAuth is the service API's share of a send before the hub sees it: from the
	// request's arrival at the handler through authorization and body decoding (cloud/api).
	StageDecodeAuth Stage = "decode_auth"
	// StageCommit is Send: validation and the transaction that makes the message durable.
	StageCommit Stage = "commit"
	// StageDeliver is one dispatch round, per message it delivered: the transaction that locks
	// messages (their delivery count durable) and the hand-over of each to the connection. A
	// message locked by its own send's or by a settle's transaction (round.go) counts the
	// hand-over alone: its lock is in that stage's commit.
	StageDeliver Stage = "deliver"
	// StageSettle is Settle: from the device's disposition (the broker's call on its PUBACK or
	// disposition publish) to the outcome, and its feedback record, being durable.
	StageSettle Stage = "settle"
	// StageFeedback is a waiting ReceiveFeedback, from the commit that woke it (a record or a
	// batch became available, or a batch was handed over to it: feedback_handoff.go) until it
	// holds a locked batch. A receive that finds a batch at once did not wait for the hub and is
	// not counted.
	StageFeedback Stage = "feedback"
)

// Stages lists every stage in path order.
var Stages = []Stage{StageDecodeAuth, StageCommit, StageDeliver, StageSettle, StageFeedback}

// stage reports that s took since start to Events.Stage.
func (h *Hub) stage(s Stage, start time.Time) {
	if h.ev.Stage != nil {
		h.ev.Stage(s, time.Since(start))
	}
}
