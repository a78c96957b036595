package hub

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// Authenticate checks a CONNECT: the client id names the same device (and module) as the username,
// the username's host is this hub's (case-insensitive), and the password is a SAS token for
// `{host}/devices/{id}` signed by the device's primary or secondary key, or (with skn) by a policy
// with DeviceConnect; not expired; the device exists and is enabled. Errors wrap ErrUnauthorized
// (with the iothub.ErrToken* cause), ErrDeviceNotFound or ErrDeviceDisabled, and say why, for the
// broker's log. The result carries the token's expiry: the broker disconnects the device then.
func (h *Hub) Authenticate(ctx context.Context, req AuthRequest) (AuthResult, error) {
	u, err := iothub.ParseUsername(req.Username)
	if err != nil {
		return AuthResult{}, fmt.Errorf("%w: %w", ErrUnauthorized, err)
	}
	dev, mod, err := iothub.ParseClientID(req.ClientID)
	if err != nil {
		return AuthResult{}, fmt.Errorf("%w: client id: %w", ErrUnauthorized, err)
	}
	if u.DeviceID != dev || u.ModuleID != mod {
		return AuthResult{}, fmt.Errorf("%w: client id %q does not match the username's device %q",
			ErrUnauthorized, req.ClientID, iothub.ClientID(u.DeviceID, u.ModuleID))
	}
	if !strings.EqualFold(u.HostName, h.cfg.HostName) {
		return AuthResult{}, fmt.Errorf("%w: username host %q is not this hub's (expected %q)",
			ErrUnauthorized, u.HostName, h.cfg.HostName)
	}
	if req.Password == "" {
		return AuthResult{}, fmt.Errorf("%w: no password: a SAS token is required", ErrUnauthorized)
	}
	tok, err := iothub.ParseSASToken(req.Password)
	if err != nil {
		return AuthResult{}, fmt.Errorf("%w: %w", ErrUnauthorized, err)
	}
	var d deviceRow
	err = h.view(ctx, func(tx storeTx) error {
		var ok bool
		var err error
		if d, ok, err = tx.device(dev); err == nil && !ok {
			err = fmt.Errorf("%w: %w: %q", ErrUnauthorized, ErrDeviceNotFound, dev)
		}
		return err
	})
	if err != nil {
		return AuthResult{}, err
	}
	target := iothub.DeviceResource(h.cfg.HostName, dev, mod)
	now := h.cfg.Now()
	var keys [2]string
	if tok.KeyName == "" {
		keys = [2]string{d.PrimaryKey, d.SecondaryKey}
	} else {
		p, ok := h.Policy(tok.KeyName)
		if !ok {
			return AuthResult{}, fmt.Errorf("%w: unknown shared access policy %q", ErrUnauthorized, tok.KeyName)
		}
		if !p.Has(DeviceConnect) {
			return AuthResult{}, fmt.Errorf("%w: policy %q lacks DeviceConnect; use \"device\" or \"iothubowner\" or a device key",
				ErrUnauthorized, p.Name)
		}
		keys = [2]string{p.PrimaryKey, p.SecondaryKey}
	}
	err1 := tok.Verify(keys[0], target, now)
	if err1 != nil {
		err2 := tok.Verify(keys[1], target, now)
		if err2 == nil {
			err1 = nil
		} else if errors.Is(err1, iothub.ErrTokenSignature) {
			err1 = err2 // the secondary key signed it: its failure (e.g. expiry) is the real one
		}
	}
	if err1 != nil {
		return AuthResult{}, fmt.Errorf("%w: device %q: %w", ErrUnauthorized, dev, err1)
	}
	if limit := now.Add(h.cfg.MaxTokenLifetime); tok.Expiry.After(limit) {
		return AuthResult{}, fmt.Errorf("%w: device %q: token expires %s, more than auth.max_token_lifetime (%v) from now; sign a shorter one",
			ErrUnauthorized, dev, tokenExpiry(tok.Expiry), h.cfg.MaxTokenLifetime)
	}
	if d.Status != iothub.DeviceEnabled {
		reason := ""
		if d.StatusReason != "" {
			reason = " (" + d.StatusReason + ")"
		}
		return AuthResult{}, fmt.Errorf("%w: %q%s", ErrDeviceDisabled, dev, reason)
	}
	return AuthResult{
		DeviceID:    dev,
		ModuleID:    mod,
		Extension:   u.HasExtension(iothub.ExtensionDispositions),
		TokenExpiry: tok.Expiry,
	}, nil
}

// tokenExpiry renders a token's expiry for a log line; one beyond year 9999 (se=2^62, say) as
// "too far in the future" rather than a wrapped date.
func tokenExpiry(t time.Time) string {
	if t.Year() > 9999 {
		return "too far in the future (after year 9999)"
	}
	return "at " + t.UTC().Format(time.RFC3339)
}
