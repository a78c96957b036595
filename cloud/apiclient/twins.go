package apiclient

import (
	"context"
	"net/http"
	"net/url"

	"github.com/c2d-project/c2d/cloud/twin"
)

func twinPath(id string) string { return "/twins/" + url.PathEscape(id) }

// GetTwin reads a device's twin (GET /twins/{id}).
func (c *Client) GetTwin(ctx context.Context, deviceID string) (twin.Twin, error) {
	resp, data, err := c.do(ctx, request{method: http.MethodGet, path: twinPath(deviceID), auth: true})
	if err != nil {
		return twin.Twin{}, err
	}
	var out twin.Twin
	return out, decodeBody(resp, data, &out)
}

// UpdateTwin merges patch ({"tags":{…},"properties":{"desired":{…}}}, null deleting) into a
// device's twin (PATCH /twins/{id}); ifMatch "" or "*" is unconditional, else the twin's etag.
func (c *Client) UpdateTwin(ctx context.Context, deviceID string, patch any, ifMatch string) (twin.Twin, error) {
	if ifMatch == "" {
		ifMatch = "*"
	}
	resp, data, err := c.do(ctx, request{method: http.MethodPatch, path: twinPath(deviceID), body: patch, ifMatch: ifMatch, auth: true})
	if err != nil {
		return twin.Twin{}, err
	}
	var out twin.Twin
	return out, decodeBody(resp, data, &out)
}
