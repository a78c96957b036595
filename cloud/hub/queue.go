package hub

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// Send validates and durably enqueues; it returns only after the commit. ErrQueueFull,
// ErrDeviceNotFound, ErrInvalidArgument (wrapped in *iothub.Error) are its refusals.
// A send without a message id gets a random UUID (c2d addition: Azure requires the sender to set
// one for feedback to be useful).
func (h *Hub) Send(ctx context.Context, deviceID string, req iothub.SendRequest) (iothub.SendResult, error) {
	if err := iothub.ValidateDeviceID(deviceID); err != nil {
		return iothub.SendResult{}, errInvalid("deviceId: %v", err)
	}
	ack := req.Ack
	if ack == "" {
		ack = iothub.AckNone
	}
	if _, err := iothub.ParseAckMode(string(ack)); err != nil {
		return iothub.SendResult{}, errInvalid("ack: %v", err)
	}
	now := h.now()
	m := &msgRow{
		DeviceID:        deviceID,
		MessageID:       req.MessageID,
		CorrelationID:   req.CorrelationID,
		UserID:          req.UserID,
		Ack:             ack,
		ContentType:     req.ContentType,
		ContentEncoding: req.ContentEncoding,
		Properties:      req.Properties,
		Body:            req.Body,
		EnqueuedAt:      now,
		ExpiresAt:       now.Add(h.cfg.DefaultTTL),
		State:           iothub.StateEnqueued,
	}
	if m.MessageID == "" {
		m.MessageID = newUUID()
	}
	// Encoded here rather than in the transaction: the store's one writer is the hub's
	// bottleneck under load, the senders are many.
	props, err := marshalProps(m.Properties)
	if err != nil {
		return iothub.SendResult{}, errInvalid("properties: %v", err)
	}
	m.storedProps = props
	if req.ExpiryTimeUTC != nil {
		exp := req.ExpiryTimeUTC.UTC().Truncate(time.Millisecond)
		// A client computing "now + min_ttl" loses a little to transit: allow a small grace.
		grace := min(5*time.Second, h.cfg.MinTTL/2)
		lo, hi := now.Add(h.cfg.MinTTL-grace), now.Add(h.cfg.MaxTTL+grace)
		if exp.Before(lo) || exp.After(hi) {
			// time.Sub saturates at ±292 years: say so rather than print a clamped duration.
			away := fmt.Sprintf("%v from now", exp.Sub(now).Round(time.Millisecond))
			if d := exp.Sub(now); d > 100*365*24*time.Hour || d < -100*365*24*time.Hour {
				away = "more than 100 years from now"
			}
			return iothub.SendResult{}, errInvalid("expiryTimeUtc: %s is %s; it must be between %v and %v ahead",
				exp.Format(time.RFC3339Nano), away, h.cfg.MinTTL, h.cfg.MaxTTL)
		}
		m.ExpiresAt, m.ExplicitExpiry = exp, true
	}
	wire := h.wireMessage(m)
	if n := wire.Size(); n > iothub.MaxMessageSize {
		return iothub.SendResult{}, coded(ErrInvalidArgument, iothub.CodeMessageTooLarge,
			"message is %d bytes (limit %d: body + system property values + application property names and values)",
			n, iothub.MaxMessageSize)
	}
	if err := wire.Validate(); err != nil {
		return iothub.SendResult{}, errInvalid("%v", err)
	}
	// Percent-encoding can triple a property's size: refuse now what could never be put on the
	// wire, rather than store it and fail every delivery (the longest form: with a lock token).
	// The topic is built to measure it only when its upper bound could pass the limit (building
	// it for every send was 8 % of the hub's allocated bytes under load).
	wire.LockToken = longestLockToken
	if iothub.DeviceBoundTopicBound(deviceID, wire) > iothub.MaxTopicLength {
		if n := len(iothub.DeliveryTopic(deviceID, wire, true)); n > iothub.MaxTopicLength {
			return iothub.SendResult{}, errInvalid("message's delivery topic would be %d bytes (MQTT's limit %d: properties are percent-encoded into it); send fewer or shorter properties, or put the data in the body",
				n, iothub.MaxTopicLength)
		}
	}
	begin := time.Now()
	var round heldRound // the device's delivery round, when this send takes it (round.go)
	err = h.updateFor(ctx, deviceID, func(tx storeTx, e *effects) error {
		seq, n, ok, err := round.enqueue(h, tx, m, h.cfg.MaxQueueDepth, e)
		if err != nil {
			return fmt.Errorf("enqueue: %w", err)
		}
		if !ok {
			return errDeviceNotFound(deviceID)
		}
		if seq == 0 {
			return coded(ErrQueueFull, iothub.CodeDeviceMaximumQueueDepthExceeded,
				"device %s has %d messages pending (limit %d): purge its queue or wait for it to drain",
				deviceID, n, h.cfg.MaxQueueDepth)
		}
		e.wake(m.ExpiresAt)
		return nil
	})
	if err != nil {
		round.finish(h, false)
		if errors.Is(err, ErrCommitUnknown) {
			return h.resolveSend(ctx, m, err)
		}
		return iothub.SendResult{}, err
	}
	h.stage(StageCommit, begin)
	if h.ev.Sent != nil {
		h.ev.Sent(deviceID)
	}
	round.finish(h, true)
	return m.sendResult(), nil
}

func (m *msgRow) sendResult() iothub.SendResult {
	return iothub.SendResult{
		DeviceID:        m.DeviceID,
		MessageID:       m.MessageID,
		SequenceNumber:  m.Seq,
		EnqueuedTimeUTC: m.EnqueuedAt,
		ExpiryTimeUTC:   m.ExpiresAt,
	}
}

// wireMessage is m as the device receives it.
func (h *Hub) wireMessage(m *msgRow) *iothub.Message {
	w := &iothub.Message{
		MessageID:       m.MessageID,
		CorrelationID:   m.CorrelationID,
		UserID:          m.UserID,
		To:              iothub.DeviceBoundTo(m.DeviceID),
		Ack:             m.Ack,
		ContentType:     m.ContentType,
		ContentEncoding: m.ContentEncoding,
		Properties:      m.Properties,
		Body:            m.Body,
		LockToken:       m.LockToken,
	}
	if m.ExplicitExpiry {
		w.ExpiryTime = m.ExpiresAt
	}
	return w
}

func (m *msgRow) status() iothub.MessageStatus {
	s := iothub.MessageStatus{
		DeviceID:        m.DeviceID,
		MessageID:       m.MessageID,
		CorrelationID:   m.CorrelationID,
		SequenceNumber:  m.Seq,
		State:           m.State,
		DeliveryCount:   m.DeliveryCount,
		Ack:             m.Ack,
		EnqueuedTimeUTC: m.EnqueuedAt,
		ExpiryTimeUTC:   m.ExpiresAt,
		Outcome:         m.Outcome,
		Reason:          m.Reason,
		Properties:      m.Properties,
	}
	if m.State == iothub.StateInvisible && !m.LockedUntil.IsZero() {
		t := m.LockedUntil
		s.LockedUntilUTC = &t
	}
	if !m.SettledAt.IsZero() {
		t := m.SettledAt
		s.SettledTimeUTC = &t
	}
	return s
}

// Queue lists a device's pending (Enqueued and Invisible) messages in FIFO order.
func (h *Hub) Queue(ctx context.Context, deviceID string) ([]iothub.MessageStatus, error) {
	out := []iothub.MessageStatus{}
	err := h.view(ctx, func(tx storeTx) error {
		if _, ok, err := tx.device(deviceID); err != nil || !ok {
			if err == nil {
				err = errDeviceNotFound(deviceID)
			}
			return err
		}
		ms, err := tx.pending(deviceID)
		for i := range ms {
			out = append(out, ms[i].status())
		}
		return err
	})
	return out, err
}

// MessageStatus returns one message's state: pending, or settled within the retention period
// (settled_retention, 24 h by default). With several messages of the same id, the newest.
func (h *Hub) MessageStatus(ctx context.Context, deviceID, messageID string) (iothub.MessageStatus, error) {
	var st iothub.MessageStatus
	err := h.view(ctx, func(tx storeTx) error {
		m, ok, err := tx.byMessageID(deviceID, messageID)
		if err != nil {
			return err
		}
		if !ok {
			if _, found, err := tx.device(deviceID); err != nil {
				return err
			} else if !found {
				return errDeviceNotFound(deviceID)
			}
			return coded(ErrMessageNotFound, iothub.CodeDeviceMessageNotFound,
				"device %q has no message %q (pending, or settled in the last %v)", deviceID, messageID, h.cfg.SettledRetention)
		}
		st = m.status()
		return nil
	})
	return st, err
}

// WaitSettled blocks until the message reaches a terminal state or ctx ends; on ctx end it returns
// the current status and ctx.Err(). It wakes on the settling commit, not by polling.
func (h *Hub) WaitSettled(ctx context.Context, deviceID, messageID string) (iothub.MessageStatus, error) {
	k := waitKey{deviceID, messageID}
	for {
		ch, release := h.waitChan(k)
		st, err := h.MessageStatus(ctx, deviceID, messageID)
		if err != nil && ctx.Err() != nil {
			// The wait ended while the status was being read (a busy hub): the caller still gets
			// where the message is, with the wait's error.
			st, err = h.statusAfterWait(ctx, deviceID, messageID)
		}
		if err != nil || st.Outcome != "" {
			release()
			return st, err
		}
		select {
		case <-ch:
			release()
		case <-ctx.Done():
			release()
			return st, ctx.Err()
		case <-h.done:
			release()
			return st, ErrClosed
		}
	}
}

// statusAfterWait reads a message's status once more after ctx ended, on a context of its own
// (bounded), and returns it with ctx's error unless the message has settled.
func (h *Hub) statusAfterWait(ctx context.Context, deviceID, messageID string) (iothub.MessageStatus, error) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	st, err := h.MessageStatus(rctx, deviceID, messageID)
	if err != nil || st.Outcome != "" {
		return st, err
	}
	return st, ctx.Err()
}

// Purge removes every pending message of a device, Invisible ones included. Each gets the outcome
// Purged; messages whose ack is negative or full produce a Purged feedback record (Azure lists
// Purged among feedback status codes; c2d emits it so senders waiting on feedback learn the end).
func (h *Hub) Purge(ctx context.Context, deviceID string) (iothub.PurgeResult, error) {
	res := iothub.PurgeResult{DeviceID: deviceID}
	err := h.updateFor(ctx, deviceID, func(tx storeTx, e *effects) error {
		res.TotalMessagesPurged = 0
		if _, ok, err := tx.device(deviceID); err != nil || !ok {
			if err == nil {
				err = errDeviceNotFound(deviceID)
			}
			return err
		}
		ms, err := tx.pending(deviceID)
		if err != nil {
			return err
		}
		now := h.now()
		for i := range ms {
			if err := h.finish(tx, &ms[i], iothub.StatusPurged, "", now, e); err != nil {
				return err
			}
		}
		res.TotalMessagesPurged = len(ms)
		return h.batchIfRecorded(tx, now, e)
	})
	return res, err
}

// ---- device side ----

// Attach registers a subscribed connection and starts delivering its queue. A previous Conn of the
// same device is detached first (its Invisible messages go back to Enqueued, then are delivered to
// c in FIFO order).
func (h *Hub) Attach(c Conn) {
	if h.closed() {
		return
	}
	id := c.DeviceID()
	l := h.attachMu.of(id)
	l.Lock()
	defer l.Unlock()
	h.mu.Lock()
	old := h.devs[id]
	h.mu.Unlock()
	if old != nil {
		h.detach(old)
	}
	ds := &devState{id: id, conn: c, inflight: map[string]time.Time{}, since: time.Now()}
	if h.cl != nil {
		epoch, err := h.cl.claim(id)
		if err != nil {
			// Without ownership nothing can be delivered: drop the session, the device
			// reconnects (to this node or another).
			h.log.Error("attach: take ownership of the device", "device", id, "err", err)
			h.mu.Lock()
			fn := h.gone
			h.mu.Unlock()
			if fn != nil {
				go fn(id)
			}
			return
		}
		ds.epoch = epoch
		// After the claim committed: a poll whose snapshot is older must not see this session
		// as lost (cluster.poll).
		ds.since = time.Now()
	}
	now := h.now()
	h.mu.Lock()
	h.devs[id] = ds
	h.conns[id] = connInfo{connected: true, updated: now}
	h.activity[id] = now
	h.mu.Unlock()
	if h.ev.Connected != nil {
		h.ev.Connected(id, true)
	}
	h.log.Debug("device attached", "device", id, "extension", c.Extension())
	h.kick(id)
}

// Detach unregisters a connection; its Invisible messages go back to Enqueued at once (or are
// dead-lettered if they used their last delivery). A Conn that is not the device's current one
// (already replaced) is ignored. No Deliver reaches c after Detach returns.
func (h *Hub) Detach(c Conn) {
	id := c.DeviceID()
	l := h.attachMu.of(id)
	l.Lock()
	defer l.Unlock()
	h.mu.Lock()
	ds := h.devs[id]
	h.mu.Unlock()
	if ds == nil || ds.conn != c {
		return
	}
	h.detach(ds)
}

// detach ends an attachment; the device's attachMu lock is held.
func (h *Hub) detach(ds *devState) {
	ds.sendMu.Lock() // waits for a Deliver in progress
	h.mu.Lock()
	ds.detached = true
	tokens := make([]string, 0, len(ds.inflight))
	for t := range ds.inflight {
		tokens = append(tokens, t)
	}
	ds.inflight = map[string]time.Time{}
	if h.devs[ds.id] == ds {
		delete(h.devs, ds.id)
		h.conns[ds.id] = connInfo{connected: false, updated: h.now()}
	}
	h.mu.Unlock()
	ds.sendMu.Unlock()
	if h.ev.Connected != nil {
		h.ev.Connected(ds.id, false)
	}
	if len(tokens) > 0 || h.cl != nil {
		if err := h.releaseTokens(ds, tokens, true); err != nil && !isClosed(err) {
			h.log.Error("detach: return messages to the queue", "device", ds.id, "err", err)
		}
	}
	h.log.Debug("device detached", "device", ds.id, "returned", len(tokens))
}

// releaseTokens returns the given deliveries of a device to Enqueued (delivery-count and TTL
// rules applied). Tokens no longer Invisible (settled meanwhile) are skipped. In a cluster nothing
// is done once another node holds the device (it released them when it took over); detaching
// also gives up this node's ownership.
func (h *Hub) releaseTokens(ds *devState, tokens []string, detaching bool) error {
	deviceID := ds.id
	return h.updateFor(context.Background(), deviceID, func(tx storeTx, e *effects) error {
		now := h.now()
		if err := h.owns(tx, ds); errors.Is(err, errFenced) {
			return nil
		} else if err != nil {
			return err
		}
		if detaching && h.cl != nil {
			if err := tx.releaseDevice(deviceID, h.cl.node, ds.epoch); err != nil {
				return err
			}
		}
		for _, t := range tokens {
			m, ok, err := tx.byToken(deviceID, t)
			if err != nil {
				return err
			}
			if !ok || m.State != iothub.StateInvisible {
				continue
			}
			if _, err := h.release(tx, &m, now, e); err != nil {
				return err
			}
		}
		return h.batchIfRecorded(tx, now, e)
	})
}

// kick asks the device's dispatcher to fill its free delivery slots: the device may have
// messages to deliver. Cheap and idempotent.
func (h *Hub) kick(id string) { h.kickIf(id, false) }

// kickFreed is kick for a delivery slot that became free: a round runs only when the device may
// have Enqueued messages (devState.queued), which spares a round (a statement and a share of a
// commit) after every settle of a device whose queue is drained.
func (h *Hub) kickFreed(id string) { h.kickIf(id, true) }

func (h *Hub) kickIf(id string, onlyQueued bool) {
	h.mu.Lock()
	ds := h.devs[id]
	if ds == nil || ds.detached || ds.broken || h.closed() || (onlyQueued && !ds.queued) {
		h.mu.Unlock()
		return
	}
	if !onlyQueued {
		ds.queued = true
	}
	ds.kicked = true
	if ds.running {
		h.mu.Unlock()
		return
	}
	ds.running = true
	h.wg.Add(1)
	h.mu.Unlock()
	go h.dispatch(ds)
}

// dispatch delivers a device's Enqueued messages in sequence order while slots are free. One runs
// per attachment at a time, which keeps deliveries in FIFO order. Each round holds the
// attachment's delivery lock from locking messages in the store to handing them to the Conn, so
// a Detach (which takes that lock) either comes before the round, or after it and then returns
// everything the round delivered: a replacing connection never overtakes older messages.
func (h *Hub) dispatch(ds *devState) {
	defer h.wg.Done()
	for {
		ds.sendMu.Lock()
		h.mu.Lock()
		if !ds.kicked || ds.detached || ds.broken || h.closed() {
			ds.running = false
			h.mu.Unlock()
			ds.sendMu.Unlock()
			return
		}
		ds.kicked = false
		// An expired lock frees its slot. The timer normally removes it; this also covers a lock
		// that expired before its delivery was recorded here.
		now := h.now()
		for tok, until := range ds.inflight {
			if !until.After(now) {
				delete(ds.inflight, tok)
			}
		}
		free := h.cfg.MaxInFlight - len(ds.inflight)
		h.mu.Unlock()
		if free <= 0 {
			ds.sendMu.Unlock()
			continue
		}
		var locked []msgRow
		again := false
		began := time.Now()
		err := h.updateFor(context.Background(), ds.id, func(tx storeTx, e *effects) error {
			locked, again = nil, false
			var err error
			if locked, again, err = h.lockRound(tx, ds.id, h.owner(ds), free, e); err != nil {
				return err
			}
			return h.batchIfRecorded(tx, h.now(), e)
		})
		if err != nil {
			ds.sendMu.Unlock()
			switch {
			case errors.Is(err, errFenced):
				h.cl.lost(ds)
			case !isClosed(err):
				h.log.Error("lock messages for delivery", "device", ds.id, "err", err)
			}
			h.mu.Lock()
			ds.running = false
			h.mu.Unlock()
			return
		}
		h.mu.Lock()
		switch {
		case again: // slots the expired messages took are free again
			ds.kicked = true
		case len(locked) < free && !ds.kicked:
			// The round took every Enqueued message it could see; one queued since is kicked
			// again (kicked set), so a later round sees it.
			ds.queued = false
		}
		h.mu.Unlock()
		back := h.deliverLocked(ds, locked, began)
		ds.sendMu.Unlock()
		if len(back) > 0 {
			if err := h.releaseTokens(ds, back, false); err != nil && !isClosed(err) {
				h.log.Error("return undelivered messages to the queue", "device", ds.id, "err", err)
			}
		}
	}
}

// lockRound locks up to free of the device's Enqueued messages, oldest first, for delivery while
// o holds the device (errFenced otherwise): one statement, so the delivery count is durable before Deliver is called and a device that crashes
// on a message still uses up one of its deliveries. A message whose TTL passed before the timer
// expired it is Expired instead, never delivered; again reports that the slots those took are
// free again.
func (h *Hub) lockRound(tx storeTx, id string, o owner, free int, e *effects) (locked []msgRow, again bool, err error) {
	now := h.now()
	until := now.Add(h.cfg.LockTimeout)
	ms, err := tx.lockNextOwned(id, o, free, until, newLockPrefix())
	if err != nil {
		return nil, false, err
	}
	for i := range ms {
		m := &ms[i]
		if m.ExpiresAt.After(now) {
			locked = append(locked, *m)
			continue
		}
		m.DeliveryCount--
		m.State, m.LockToken, m.LockedUntil = iothub.StateEnqueued, "", time.Time{}
		if err := h.finish(tx, m, iothub.StatusExpired, "", now, e); err != nil {
			return nil, false, err
		}
		again = true
	}
	if len(locked) > 0 {
		e.wake(until)
	}
	return locked, again, nil
}

// deliverLocked hands locked messages to the attachment's Conn; ds.sendMu is held, so ds is not
// detached. It returns the lock tokens of messages that must go back to the queue: the one whose
// Deliver failed and every one after it (a failed Conn gets nothing more).
// began is when the round started locking them (StageDeliver).
func (h *Hub) deliverLocked(ds *devState, locked []msgRow, began time.Time) (back []string) {
	if len(locked) == 0 {
		return nil
	}
	h.mu.Lock()
	for _, m := range locked {
		ds.inflight[m.LockToken] = m.LockedUntil
	}
	h.activity[ds.id] = h.now()
	h.mu.Unlock()
	for i := range locked {
		m := &locked[i]
		if len(back) > 0 {
			back = append(back, m.LockToken)
			continue
		}
		// Called without h.mu: the broker may Settle from another goroutine at once.
		if err := ds.conn.Deliver(h.wireMessage(m)); err != nil {
			h.log.Warn("deliver failed; message goes back to the queue and this connection gets no more deliveries",
				"device", ds.id, "messageId", m.MessageID, "err", err)
			back = append(back, m.LockToken)
			continue
		}
		h.stage(StageDeliver, began)
		if h.ev.Delivered != nil {
			h.ev.Delivered(ds.id)
		}
	}
	if len(back) > 0 {
		h.mu.Lock()
		ds.broken = true
		for _, t := range back {
			delete(ds.inflight, t)
		}
		h.mu.Unlock()
	}
	return back
}

// Settle applies a device's disposition to the delivery identified by lockToken. ErrLockLost when
// the lock expired or the token is unknown. Settles are accepted in any order. A message whose TTL
// passed while it was locked can still be completed (or rejected) while the lock is valid; the
// expiry applies when it would go back to the queue.
func (h *Hub) Settle(ctx context.Context, deviceID, lockToken string, d iothub.Disposition, reason string) error {
	switch d {
	case iothub.DispositionComplete, iothub.DispositionReject, iothub.DispositionAbandon:
	default:
		return errInvalid("disposition %q: want complete, reject or abandon", d)
	}
	reason = iothub.TruncateReason(reason)
	began := time.Now()
	var ds *devState
	if h.cl != nil {
		// In a cluster a settle counts only through the session that holds the device.
		h.mu.Lock()
		ds = h.devs[deviceID]
		h.mu.Unlock()
		if ds == nil {
			return errLockLost(deviceID, lockToken)
		}
	}
	var round heldRound // the device's next delivery round, when this settle takes it (round.go)
	err := h.updateFor(ctx, deviceID, func(tx storeTx, e *effects) error {
		now := h.now()
		if d != iothub.DispositionAbandon {
			// Complete and reject: the ownership check, the lookup, the lock check, the removal
			// and the outcome in one statement where the store can (PostgreSQL).
			outcome, why := iothub.StatusSuccess, ""
			if d == iothub.DispositionReject {
				outcome, why = iothub.StatusRejected, reason
			}
			m, ok, err := tx.settleLocked(deviceID, lockToken, now, h.owner(ds), outcome, why)
			if errors.Is(err, errFenced) || (err == nil && !ok) {
				return errLockLost(deviceID, lockToken)
			} else if err != nil {
				return err
			}
			if err := h.recorded(tx, &m, now, e); err != nil {
				return err
			}
			if err := round.next(h, tx, deviceID, lockToken, e); err != nil {
				return err
			}
			return h.batchIfRecorded(tx, now, e)
		}
		if ds != nil {
			if err := h.owns(tx, ds); errors.Is(err, errFenced) {
				return errLockLost(deviceID, lockToken)
			} else if err != nil {
				return err
			}
		}
		// Abandon.
		m, ok, err := tx.byToken(deviceID, lockToken)
		if err != nil {
			return err
		}
		if !ok || m.State != iothub.StateInvisible || !m.LockedUntil.After(now) {
			return errLockLost(deviceID, lockToken)
		}
		if _, err := h.release(tx, &m, now, e); err != nil {
			return err
		}
		return h.batchIfRecorded(tx, now, e)
	})
	if err != nil {
		round.finish(h, false)
		return err
	}
	h.stage(StageSettle, began)
	round.finish(h, true)
	h.mu.Lock()
	h.activity[deviceID] = h.now()
	h.mu.Unlock()
	return nil
}
