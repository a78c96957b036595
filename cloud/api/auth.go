package api

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/c2d-project/c2d/cloud/hub"
	"github.com/c2d-project/c2d/cloud/iothub"
)

// builtinPolicies are suggested, in this order, when a policy lacks a route's right.
var builtinPolicies = []string{"service", "registryRead", "registryReadWrite", "iothubowner"}

func unauthorized(format string, args ...any) error {
	return &iothub.Error{Code: iothub.CodeIotHubUnauthorizedAccess, Detail: fmt.Sprintf(format, args...)}
}

// authorize checks the request's policy SAS token (Azure's REST form) and that the policy grants
// one of rights. Every failure is 401 IotHubUnauthorizedAccess with a detail saying why.
func (s *Server) authorize(r *http.Request, rights []hub.Permission) error {
	hdr := r.Header.Get("Authorization")
	if hdr == "" {
		return unauthorized("no Authorization header; send a shared access policy's SAS token " +
			"(SharedAccessSignature sr=...&sig=...&se=...&skn=...), e.g. from `c2d-hub connection-string`")
	}
	tok, err := iothub.ParseSASToken(hdr)
	if err != nil {
		return unauthorized("Authorization header: %v", err)
	}
	if tok.KeyName == "" {
		return unauthorized("SAS token has no skn (policy name): the service API takes policy tokens, not device tokens")
	}
	pol, ok := s.opt.Hub.Policy(tok.KeyName)
	if !ok {
		return unauthorized("unknown shared access policy %q", tok.KeyName)
	}
	now := s.now()
	err = tok.Verify(pol.PrimaryKey, s.opt.HostName, now)
	if errors.Is(err, iothub.ErrTokenSignature) && pol.SecondaryKey != "" {
		err = tok.Verify(pol.SecondaryKey, s.opt.HostName, now)
	}
	switch {
	case err == nil:
	case errors.Is(err, iothub.ErrTokenExpired):
		return unauthorized("%v (hub clock %s UTC; if the token is fresh, the client's clock is wrong)",
			err, now.UTC().Format("2006-01-02 15:04:05"))
	case errors.Is(err, iothub.ErrTokenResource):
		return unauthorized("%v (this hub is %q; sign for HostName=%s)", err, s.opt.HostName, s.opt.HostName)
	case errors.Is(err, iothub.ErrTokenSignature):
		return unauthorized("%v: not signed with policy %q's primary or secondary key (wrong or rotated key?)", iothub.ErrTokenSignature, pol.Name)
	default:
		return unauthorized("%v", err)
	}
	for _, need := range rights {
		if slices.Contains(pol.Rights, need) {
			return nil
		}
	}
	return unauthorized("%s", s.lacks(pol, rights))
}

// lacks says which permission a policy misses and which built-in policies have it:
// "policy 'registryRead' lacks ServiceConnect; use 'service' or 'iothubowner'".
func (s *Server) lacks(pol hub.Policy, rights []hub.Permission) string {
	need := make([]string, len(rights))
	for i, r := range rights {
		need[i] = string(r)
	}
	var have []string
	for _, name := range builtinPolicies {
		p, ok := s.opt.Hub.Policy(name)
		if !ok {
			continue
		}
		for _, r := range rights {
			if slices.Contains(p.Rights, r) {
				have = append(have, "'"+name+"'")
				break
			}
		}
	}
	msg := fmt.Sprintf("policy '%s' lacks %s", pol.Name, strings.Join(need, " or "))
	if len(have) > 0 {
		msg += "; use " + joinOr(have)
	}
	return msg
}

func joinOr(xs []string) string {
	if len(xs) <= 1 {
		return strings.Join(xs, "")
	}
	return strings.Join(xs[:len(xs)-1], ", ") + " or " + xs[len(xs)-1]
}
