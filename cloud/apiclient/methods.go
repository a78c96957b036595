package apiclient

import (
	"context"
	"net/http"
	"net/url"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// InvokeMethod calls a direct method on a device (POST /twins/{id}/methods) and returns the
// device's status and payload. The hub ends the call: 404103 DeviceNotOnline (errors.Is with
// iothub.NotOnline("")), 504101 GatewayTimeout; this client waits the request's response and
// connect timeouts plus DefaultTimeout.
func (c *Client) InvokeMethod(ctx context.Context, deviceID string, req iothub.MethodRequest) (iothub.MethodResult, error) {
	resp, connect, err := req.Timeouts()
	if err != nil {
		return iothub.MethodResult{}, &iothub.Error{Code: iothub.CodeArgumentInvalid, Detail: err.Error()}
	}
	r, data, err := c.do(ctx, request{method: http.MethodPost, path: "/twins/" + url.PathEscape(deviceID) + "/methods",
		body: req, auth: true, wait: resp + connect + time.Second})
	if err != nil {
		return iothub.MethodResult{}, err
	}
	var out iothub.MethodResult
	return out, decodeBody(r, data, &out)
}
