package api

import (
	"net/http"
	"slices"

	"github.com/c2d-project/c2d/cloud/hub"
	"github.com/c2d-project/c2d/cloud/iothub"
)

// ownerRights are iothubowner's: renewing a policy key needs all of them, since the new key is
// returned and any policy's key grants what that policy grants.
var ownerRights = []hub.Permission{hub.RegistryRead, hub.RegistryWrite, hub.ServiceConnect, hub.DeviceConnect}

// renewPolicyKey is `POST /policies/{name}/renew-key?key=primary|secondary|swap` (c2d extension;
// Azure renews keys through its management plane). Only a policy with every right
// (iothubowner) may.
func (s *Server) renewPolicyKey(w http.ResponseWriter, r *http.Request) error {
	// authorize has checked the token and RegistryWrite; the caller's policy must hold every right.
	tok, err := iothub.ParseSASToken(r.Header.Get("Authorization"))
	if err != nil {
		return unauthorized("Authorization header: %v", err)
	}
	caller, _ := s.opt.Hub.Policy(tok.KeyName)
	for _, need := range ownerRights {
		if !slices.Contains(caller.Rights, need) {
			return unauthorized("policy '%s' lacks %s: renewing a policy key needs iothubowner", caller.Name, need)
		}
	}
	which := r.URL.Query().Get("key")
	if which == "" {
		which = string(hub.RenewPrimary)
	}
	k, err := hub.ParseRenewKey(which)
	if err != nil {
		return err
	}
	p, err := s.opt.Hub.RenewPolicyKey(r.Context(), r.PathValue("name"), k)
	if err != nil {
		return err
	}
	out := iothub.PolicyKeys{KeyName: p.Name, PrimaryKey: p.PrimaryKey, SecondaryKey: p.SecondaryKey}
	for _, right := range p.Rights {
		out.Rights = append(out.Rights, string(right))
	}
	return writeJSON(w, http.StatusOK, out)
}
