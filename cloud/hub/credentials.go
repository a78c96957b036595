package hub

import (
	"context"
	"fmt"
)

// Revoking what leaked (issue #17): a key change must end what the old key let in. The hub stores
// keys and checks tokens; the broker holds the sessions. So every key change — a device's keys
// through PutDevice, a policy's through RenewPolicyKey — is announced through
// OnCredentialsChanged, and the broker re-runs Authenticate on the affected sessions' CONNECT
// credentials and drops those that no longer pass.

// OnCredentialsChanged registers the callback called after keys changed: with a device id when
// that device's keys changed, with "" when a shared access policy's did (any session may have
// connected with a policy token). Set it before serving traffic; nil is fine.
func (h *Hub) OnCredentialsChanged(fn func(deviceID string)) {
	h.mu.Lock()
	h.creds = fn
	h.mu.Unlock()
}

// credentialsChanged re-checks the sessions on this node and, in a cluster, on every other.
func (h *Hub) credentialsChanged(deviceID string) {
	h.localCredentialsChanged(deviceID)
	if h.cl != nil {
		h.cl.publishCreds(deviceID)
	}
}

func (h *Hub) localCredentialsChanged(deviceID string) {
	h.mu.Lock()
	fn := h.creds
	h.mu.Unlock()
	if fn != nil {
		fn(deviceID)
	}
}

// RenewKey says which key of a policy RenewPolicyKey replaces (Azure CLI's --renew-key).
type RenewKey string

const (
	RenewPrimary   RenewKey = "primary"   // a new primary key; the secondary stays
	RenewSecondary RenewKey = "secondary" // a new secondary key; the primary stays
	RenewSwap      RenewKey = "swap"      // primary and secondary trade places
)

// ParseRenewKey accepts primary, secondary or swap.
func ParseRenewKey(s string) (RenewKey, error) {
	switch k := RenewKey(s); k {
	case RenewPrimary, RenewSecondary, RenewSwap:
		return k, nil
	}
	return "", errInvalid("renew-key %q: want primary, secondary or swap", s)
}

// RenewPolicyKey replaces one key of a shared access policy with a fresh random one (or swaps
// them) and returns the policy as it now is. Tokens signed with the replaced key stop working at
// once: the API refuses them, and MQTT sessions that connected with them are dropped. Rotate
// without downtime by moving clients to the secondary key, renewing the primary, moving them
// back, then renewing the secondary.
func (h *Hub) RenewPolicyKey(ctx context.Context, name string, which RenewKey) (Policy, error) {
	if _, err := ParseRenewKey(string(which)); err != nil {
		return Policy{}, err
	}
	cur, ok := h.Policy(name)
	if !ok {
		return Policy{}, errInvalid("no shared access policy %q (policies: iothubowner, service, device, registryRead, registryReadWrite)", name)
	}
	p := cur
	switch which {
	case RenewPrimary:
		p.PrimaryKey = newKey()
	case RenewSecondary:
		p.SecondaryKey = newKey()
	case RenewSwap:
		p.PrimaryKey, p.SecondaryKey = cur.SecondaryKey, cur.PrimaryKey
	}
	err := h.update(ctx, func(tx storeTx, e *effects) error {
		return tx.updatePolicyKeys(p.Name, p.PrimaryKey, p.SecondaryKey)
	})
	if err != nil {
		return Policy{}, fmt.Errorf("renew policy %q key: %w", name, err)
	}
	h.polMu.Lock()
	h.pols[p.Name] = p
	h.polMu.Unlock()
	h.log.Info("policy key renewed; sessions whose token no longer verifies are dropped", "policy", p.Name, "renewed", string(which))
	h.credentialsChanged("")
	return p, nil
}
