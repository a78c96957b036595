package broker

import (
	"context"
	"errors"

	"github.com/c2d-project/c2d/cloud/broker/internal/mochi/packets"
	"github.com/c2d-project/c2d/cloud/hub"
)

// reverify checks the CONNECT credentials of live sessions again after a key change (deviceID's,
// or every session when deviceID is "": a policy key changed) and drops each one whose token no
// longer verifies — a leaked key, once replaced, lets nobody keep listening (issue #17). A
// session is kept when the check could not be made (the store did not answer): it is dropped at
// the next change or at its token's expiry.
func (b *Broker) reverify(deviceID string) {
	b.mu.RLock()
	var check []*conn
	for _, c := range b.conns {
		if deviceID == "" || c.deviceID == deviceID {
			check = append(check, c)
		}
	}
	b.mu.RUnlock()
	b.recheck(check)
}

// recheck authenticates the sessions' CONNECT credentials again and drops those refused.
//
// A CONNECT authenticated while keys change, with the old key, is established after the change's
// re-check took its list of sessions: establish re-checks it, having registered it first. The
// change increments Broker.credGen before its re-check takes the list, and a CONNECT reads
// credGen before Authenticate: either the list holds the new session, or establish sees credGen
// changed.
func (b *Broker) recheck(check []*conn) {
	for _, c := range check {
		ctx, cancel := context.WithTimeout(b.ctx, b.opts.AuthTimeout)
		_, err := b.core.Authenticate(ctx, c.auth)
		cancel()
		switch {
		case err == nil:
		case errors.Is(err, hub.ErrUnauthorized), errors.Is(err, hub.ErrDeviceNotFound), errors.Is(err, hub.ErrDeviceDisabled):
			c.log.Info("dropping device session: its token no longer verifies after a key change", "reason", err.Error())
			b.kick(c.cl, packets.ErrNotAuthorized)
		default:
			c.log.Warn("could not re-check a session's token after a key change; keeping it", "error", err)
		}
	}
}
