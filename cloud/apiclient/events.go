package apiclient

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// Events reads the hub's device-to-cloud events after sequence number after (-1: from now on),
// of deviceID only when given, waiting up to wait for the first (the hub caps it at 60 s). Ask
// again with the answer's Next. Reading consumes nothing (c2d extension, docs/api.md).
func (c *Client) Events(ctx context.Context, after int64, deviceID string, wait time.Duration) (iothub.EventsAnswer, error) {
	q := url.Values{}
	if after >= 0 {
		q.Set("after", strconv.FormatInt(after, 10))
	}
	if deviceID != "" {
		q.Set("deviceId", deviceID)
	}
	if wait > 0 {
		q.Set("wait", wait.String())
	}
	resp, data, err := c.do(ctx, request{method: http.MethodGet, path: "/messages/events", query: q, auth: true, wait: wait})
	if err != nil {
		return iothub.EventsAnswer{}, err
	}
	var out iothub.EventsAnswer
	return out, decodeBody(resp, data, &out)
}
