package amqp

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/c2d-project/c2d/cloud/hub"
	"github.com/c2d-project/c2d/cloud/iothub"
)

// grant is what one put-token (or SASL PLAIN) established on a connection: a policy's rights over
// a resource, or one device's identity, until the token's expiry. A renewal for the same audience
// updates the grant in place, so links authorized by it live on.
type grant struct {
	audience string
	policy   *hub.Policy // nil for a device-key token
	resource string      // the token's sr, decoded
	device   string      // set for a device-key token
	expiry   time.Time
	timer    *time.Timer
}

type authState struct {
	grants map[string]*grant
}

func (a *authState) stop() {
	for _, g := range a.grants {
		if g.timer != nil {
			g.timer.Stop()
		}
	}
}

// service returns a live grant with ServiceConnect over the whole hub, or nil.
func (a *authState) service(host string, now time.Time) *grant {
	for _, g := range a.grants {
		if g.policy != nil && g.policy.Has(hub.ServiceConnect) && iothub.ResourceCovers(g.resource, host) && g.expiry.After(now) {
			return g
		}
	}
	return nil
}

// device returns a live grant that lets a client act as device id: its own key, or a policy with
// DeviceConnect over it.
func (a *authState) device(host, id string, now time.Time) *grant {
	target := iothub.DeviceResource(host, id, "")
	for _, g := range a.grants {
		if !g.expiry.After(now) {
			continue
		}
		if g.device == id || (g.policy != nil && g.policy.Has(hub.DeviceConnect) && iothub.ResourceCovers(g.resource, target)) {
			return g
		}
	}
	return nil
}

// normalizeAudience turns a CBS name into a comparable key: `host`, `https://host`,
// `host%2Fdevices%2Fid` and `amqps://host/devices/id` all name their resource.
func normalizeAudience(name string) string {
	if u, err := url.PathUnescape(name); err == nil {
		name = u
	}
	for _, p := range []string{"https://", "http://", "amqps://", "amqp://", "sb://"} {
		name = strings.TrimPrefix(name, p)
	}
	return strings.ToLower(strings.TrimSuffix(name, "/"))
}

// verifyToken checks a SAS token the way the HTTP API and the MQTT broker do and returns the grant
// it makes. It may read the store (device keys): call it without conn.mu.
func (s *Server) verifyToken(ctx context.Context, audience, token string) (*grant, error) {
	tok, err := iothub.ParseSASToken(token)
	if err != nil {
		return nil, err
	}
	host := s.opt.HostName
	now := s.now()
	g := &grant{audience: normalizeAudience(audience), resource: tok.Resource, expiry: tok.Expiry}
	if g.audience == "" {
		g.audience = normalizeAudience(tok.Resource)
	}
	if !iothub.ResourceCovers(host, tok.Resource) {
		return nil, fmt.Errorf("%w: token is for %q; this hub is %q (sign for HostName=%s)", iothub.ErrTokenResource, tok.Resource, host, host)
	}
	if tok.KeyName == "" {
		// A device's own key: sr = {host}/devices/{id}.
		r := tok.Resource
		if i := strings.Index(r, "://"); i >= 0 {
			r = r[i+3:]
		}
		segs := strings.Split(strings.TrimSuffix(r, "/"), "/")
		id := ""
		if len(segs) == 3 && segs[1] == "devices" {
			id, _ = iothub.PercentDecode(segs[2])
		}
		if id == "" {
			return nil, fmt.Errorf("a token without skn must be a device's, for %s/devices/{id}; this one is for %q", host, tok.Resource)
		}
		res, err := s.opt.Hub.Authenticate(ctx, hub.AuthRequest{
			ClientID: id,
			Username: host + "/" + id + "/?api-version=" + iothub.APIVersion,
			Password: token,
		})
		if err != nil {
			return nil, err
		}
		g.device, g.expiry = res.DeviceID, res.TokenExpiry
		return g, nil
	}
	pol, ok := s.opt.Hub.Policy(tok.KeyName)
	if !ok {
		return nil, fmt.Errorf("unknown shared access policy %q", tok.KeyName)
	}
	err = tok.Verify(pol.PrimaryKey, tok.Resource, now)
	if errors.Is(err, iothub.ErrTokenSignature) && pol.SecondaryKey != "" {
		err = tok.Verify(pol.SecondaryKey, tok.Resource, now)
	}
	switch {
	case err == nil:
	case errors.Is(err, iothub.ErrTokenExpired):
		return nil, fmt.Errorf("%w (hub clock %s UTC; if the token is fresh, the client's clock is wrong)",
			err, now.UTC().Format("2006-01-02 15:04:05"))
	default:
		return nil, err
	}
	g.policy = &pol
	return g, nil
}

// install records g on the connection (replacing the grant for the same audience, whose links
// keep living under the new expiry) and arms its expiry; conn.mu is held.
func (c *conn) install(g *grant) {
	if c.auth.grants == nil {
		c.auth.grants = map[string]*grant{}
	}
	if old := c.auth.grants[g.audience]; old != nil {
		old.policy, old.resource, old.device, old.expiry = g.policy, g.resource, g.device, g.expiry
		g = old
		c.srv.tokenEvent(TokenRenewed)
	} else {
		c.auth.grants[g.audience] = g
		c.srv.tokenEvent(TokenAccepted)
	}
	if g.timer != nil {
		g.timer.Stop()
	}
	g.timer = time.AfterFunc(time.Until(g.expiry), func() { c.locked(func() { c.expire(g) }) })
}

// expire detaches the links that rely on g once its token expired (unless it was renewed).
func (c *conn) expire(g *grant) {
	if g.expiry.After(c.srv.now()) || c.ending {
		return
	}
	delete(c.auth.grants, g.audience)
	for _, s := range c.sessions {
		for _, l := range s.links {
			if l.grant == g {
				l.detach(amqpError(condUnauthorized, "the SAS token for %s expired at %s; put a new token on $cbs before it expires",
					g.audience, g.expiry.UTC().Format(time.RFC3339)))
			}
		}
	}
}
