package apiclient

import (
	"context"
	"net/http"
	"net/url"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// RenewPolicyKey replaces a shared access policy's primary or secondary key with a fresh one, or
// swaps them (which: "primary", "secondary" or "swap"), and returns the policy's keys as they now
// are. The client's own policy must be iothubowner. Tokens signed with the replaced key stop
// working at once, this client's own included when it renewed the key it signs with.
func (c *Client) RenewPolicyKey(ctx context.Context, name, which string) (iothub.PolicyKeys, error) {
	resp, data, err := c.do(ctx, request{method: http.MethodPost, path: "/policies/" + url.PathEscape(name) + "/renew-key",
		query: url.Values{"key": {which}}, auth: true})
	if err != nil {
		return iothub.PolicyKeys{}, err
	}
	var out iothub.PolicyKeys
	return out, decodeBody(resp, data, &out)
}
