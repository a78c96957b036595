package apiclient

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// DefaultTimeout bounds a request whose context has no deadline, on top of any long-poll wait.
const DefaultTimeout = 30 * time.Second

// Options tunes a Client. The zero value talks HTTPS to the connection string's HostName with the
// system's root CAs.
type Options struct {
	// Endpoint is the base URL: https://host:port or http://host:port. Default https://{HostName}.
	Endpoint string
	// RootCAs trusts these CAs for HTTPS (e.g. the hub's generated DATA/tls/ca.pem); CAFile is the
	// same read from a PEM file. Neither: the system roots.
	RootCAs *x509.CertPool
	CAFile  string
	// HTTPClient replaces the client built from the above (its Timeout, if any, is stretched for
	// long-polls).
	HTTPClient *http.Client
	// TokenTTL is the lifetime of the SAS tokens the client signs (default 1 h; renewed at half).
	TokenTTL time.Duration
	// UserAgent is sent on every request (default "c2d-apiclient").
	UserAgent string
}

// Client calls one hub. It is safe for concurrent use.
type Client struct {
	cs       iothub.ServiceConnectionString
	base     *url.URL
	hc       *http.Client
	ttl      time.Duration
	ua       string
	mu       sync.Mutex
	token    string
	tokenExp time.Time
}

// New makes a client for cs. It fails on a bad endpoint or an unreadable CA file.
func New(cs iothub.ServiceConnectionString, opt Options) (*Client, error) {
	ep := opt.Endpoint
	if ep == "" {
		if cs.HostName == "" {
			return nil, errors.New("apiclient: no Endpoint and no HostName in the connection string")
		}
		ep = "https://" + cs.HostName
	}
	base, err := url.Parse(strings.TrimSuffix(ep, "/"))
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, fmt.Errorf("apiclient: endpoint %q: want http://host:port or https://host:port", ep)
	}
	c := &Client{cs: cs, base: base, hc: opt.HTTPClient, ttl: opt.TokenTTL, ua: opt.UserAgent}
	if c.ttl <= 0 {
		c.ttl = time.Hour
	}
	if c.ua == "" {
		c.ua = "c2d-apiclient"
	}
	if c.hc == nil {
		roots := opt.RootCAs
		if opt.CAFile != "" {
			pem, err := os.ReadFile(opt.CAFile)
			if err != nil {
				return nil, fmt.Errorf("apiclient: CA file: %w", err)
			}
			if roots == nil {
				roots = x509.NewCertPool()
			}
			if !roots.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("apiclient: CA file %s: no PEM certificate in it", opt.CAFile)
			}
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
		tr.TLSHandshakeTimeout = 10 * time.Second
		tr.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
		// No Client.Timeout: per-request deadlines come from the context (see do), so a long-poll
		// is never cut by a blanket timeout.
		c.hc = &http.Client{Transport: tr}
	}
	return c, nil
}

// Endpoint is the base URL requests go to.
func (c *Client) Endpoint() string { return c.base.String() }

// sasToken returns a cached token, signing a new one once half its life is gone.
func (c *Client) sasToken() (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	if c.token != "" && now.Before(c.tokenExp.Add(-c.ttl/2)) {
		return c.token, nil
	}
	tok, err := c.cs.Token(now, c.ttl)
	if err != nil {
		return "", fmt.Errorf("apiclient: sign SAS token for policy %q: %w", c.cs.SharedAccessKeyName, err)
	}
	c.token, c.tokenExp = tok, now.Add(c.ttl)
	return tok, nil
}

// request is one API call.
type request struct {
	method  string
	path    string // already escaped
	query   url.Values
	body    any
	ifMatch string
	wait    time.Duration // long-poll wait: extends the deadline
	auth    bool
}

// do performs req and returns the response with its body read; non-2xx answers become
// *iothub.Error.
func (c *Client) do(ctx context.Context, req request) (*http.Response, []byte, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultTimeout+req.wait)
		defer cancel()
	}
	q := req.query
	if q == nil {
		q = url.Values{}
	}
	q.Set("api-version", iothub.APIVersion)
	u := *c.base
	unescaped, err := url.PathUnescape(req.path)
	if err != nil {
		return nil, nil, fmt.Errorf("apiclient: path %q: %w", req.path, err)
	}
	u.Path = c.base.Path + unescaped
	u.RawPath = c.base.EscapedPath() + req.path
	u.RawQuery = q.Encode()
	var body io.Reader
	if req.body != nil {
		b, err := json.Marshal(req.body)
		if err != nil {
			return nil, nil, fmt.Errorf("apiclient: encode %s %s: %w", req.method, req.path, err)
		}
		body = bytes.NewReader(b)
	}
	hr, err := http.NewRequestWithContext(ctx, req.method, u.String(), body)
	if err != nil {
		return nil, nil, fmt.Errorf("apiclient: %s %s: %w", req.method, u.Redacted(), err)
	}
	if req.body != nil {
		hr.Header.Set("Content-Type", "application/json; charset=utf-8")
	}
	hr.Header.Set("Accept", "application/json")
	hr.Header.Set("User-Agent", c.ua)
	if req.ifMatch != "" {
		hr.Header.Set("If-Match", quoteETag(req.ifMatch))
	}
	if req.auth {
		tok, err := c.sasToken()
		if err != nil {
			return nil, nil, err
		}
		hr.Header.Set("Authorization", tok)
	}
	hc := c.hc
	if hc.Timeout > 0 && hc.Timeout < req.wait+DefaultTimeout {
		stretched := *hc
		stretched.Timeout = req.wait + DefaultTimeout
		hc = &stretched
	}
	resp, err := hc.Do(hr)
	if err != nil {
		return nil, nil, fmt.Errorf("apiclient: %w", err) // *url.Error: names method and URL
	}
	defer resp.Body.Close()
	if err := ctx.Err(); err != nil {
		// The caller gave up as the answer came: it gets what it asked for, its context's end
		// (the transport can still hand over an answer that raced the cancel).
		return nil, nil, fmt.Errorf("apiclient: %s %s: %w", req.method, u.Redacted(), err)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, nil, fmt.Errorf("apiclient: %s %s: read answer: %w", req.method, u.Redacted(), err)
	}
	if resp.StatusCode >= 300 {
		return resp, data, decodeError(resp, data)
	}
	return resp, data, nil
}

// decodeError turns a non-2xx answer into *iothub.Error: the hub's JSON body when it has one, else
// a code made from the HTTP status (e.g. a proxy's 502 → 502000).
func decodeError(resp *http.Response, data []byte) error {
	var er iothub.ErrorResponse
	if json.Unmarshal(data, &er) == nil && er.ErrorCode != 0 {
		detail := er.Detail
		if detail == "" {
			detail = er.Message
		}
		e := &iothub.Error{Code: er.ErrorCode, Detail: detail}
		if er.Code == iothub.NameDeviceNotOnline {
			e.Name = er.Code // 404103 has two names (iothub.CodeDeviceNotOnline)
		}
		return e
	}
	text := strings.TrimSpace(string(data))
	if len(text) > 512 {
		text = text[:512] + "…"
	}
	if text == "" {
		text = resp.Status
	}
	return &iothub.Error{Code: iothub.ErrorCode(resp.StatusCode * 1000), Detail: fmt.Sprintf("%s %s: %s", resp.Request.Method, resp.Request.URL.Path, text)}
}

func decodeBody(resp *http.Response, data []byte, v any) error {
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("apiclient: %s %s: decode answer: %w", resp.Request.Method, resp.Request.URL.Path, err)
	}
	return nil
}

func devicePath(id string) string { return "/devices/" + url.PathEscape(id) }

func quoteETag(e string) string {
	if e == "*" || strings.HasPrefix(e, `"`) {
		return e
	}
	return `"` + e + `"`
}

func unquoteETag(e string) string {
	e = strings.TrimPrefix(strings.TrimSpace(e), "W/")
	if len(e) >= 2 && e[0] == '"' && e[len(e)-1] == '"' {
		return e[1 : len(e)-1]
	}
	return e
}

// ---- registry ----

// PutDevice creates or updates a device; ifMatch "" or "*" is unconditional, otherwise the update
// fails with 412001 PreconditionFailed unless the device's etag still matches.
func (c *Client) PutDevice(ctx context.Context, dev iothub.Device, ifMatch string) (iothub.Device, error) {
	resp, data, err := c.do(ctx, request{method: http.MethodPut, path: devicePath(dev.DeviceID), body: dev, ifMatch: ifMatch, auth: true})
	if err != nil {
		return iothub.Device{}, err
	}
	var out iothub.Device
	return out, decodeBody(resp, data, &out)
}

// CreateDevice registers an enabled device with SAS keys; empty keys are generated by the hub.
func (c *Client) CreateDevice(ctx context.Context, id, primaryKey, secondaryKey string) (iothub.Device, error) {
	return c.PutDevice(ctx, iothub.Device{
		DeviceID: id,
		Status:   iothub.DeviceEnabled,
		Authentication: iothub.Authentication{Type: "sas", SymmetricKey: iothub.SymmetricKey{
			PrimaryKey: primaryKey, SecondaryKey: secondaryKey}},
	}, "")
}

// GetDevice reads a device with its live connection state and queue count.
func (c *Client) GetDevice(ctx context.Context, id string) (iothub.Device, error) {
	resp, data, err := c.do(ctx, request{method: http.MethodGet, path: devicePath(id), auth: true})
	if err != nil {
		return iothub.Device{}, err
	}
	var out iothub.Device
	return out, decodeBody(resp, data, &out)
}

// ListDevices returns every device, sorted by id.
func (c *Client) ListDevices(ctx context.Context) ([]iothub.Device, error) {
	resp, data, err := c.do(ctx, request{method: http.MethodGet, path: "/devices", auth: true})
	if err != nil {
		return nil, err
	}
	var out []iothub.Device
	return out, decodeBody(resp, data, &out)
}

// DeleteDevice deletes a device with its queue and pending feedback; ifMatch as in PutDevice.
func (c *Client) DeleteDevice(ctx context.Context, id, ifMatch string) error {
	_, _, err := c.do(ctx, request{method: http.MethodDelete, path: devicePath(id), ifMatch: ifMatch, auth: true})
	return err
}

// SetDeviceStatus enables or disables a device: it reads the device and writes it back with its
// etag, so a concurrent change makes it fail with 412001 rather than be overwritten.
func (c *Client) SetDeviceStatus(ctx context.Context, id string, status iothub.DeviceStatus) (iothub.Device, error) {
	dev, err := c.GetDevice(ctx, id)
	if err != nil {
		return iothub.Device{}, err
	}
	dev.Status = status
	return c.PutDevice(ctx, dev, dev.ETag)
}

// ---- messages ----

// Send enqueues a cloud-to-device message; when it returns without error the message is durable.
func (c *Client) Send(ctx context.Context, deviceID string, req iothub.SendRequest) (iothub.SendResult, error) {
	resp, data, err := c.do(ctx, request{method: http.MethodPost, path: devicePath(deviceID) + "/messages/devicebound", body: req, auth: true})
	if err != nil {
		return iothub.SendResult{}, err
	}
	var out iothub.SendResult
	return out, decodeBody(resp, data, &out)
}

// Queue lists a device's pending (Enqueued and Invisible) messages in FIFO order.
func (c *Client) Queue(ctx context.Context, deviceID string) ([]iothub.MessageStatus, error) {
	resp, data, err := c.do(ctx, request{method: http.MethodGet, path: devicePath(deviceID) + "/messages/devicebound", auth: true})
	if err != nil {
		return nil, err
	}
	var out []iothub.MessageStatus
	return out, decodeBody(resp, data, &out)
}

// MessageStatus returns where a message is. With wait > 0 the hub holds the request until the
// message is settled (Outcome set) or wait elapses (the hub caps it at 60 s), then answers with the
// status it has.
func (c *Client) MessageStatus(ctx context.Context, deviceID, messageID string, wait time.Duration) (iothub.MessageStatus, error) {
	req := request{method: http.MethodGet, path: devicePath(deviceID) + "/messages/devicebound/" + url.PathEscape(messageID), auth: true, wait: wait}
	if wait > 0 {
		req.query = url.Values{"wait": {wait.String()}}
	}
	resp, data, err := c.do(ctx, req)
	if err != nil {
		return iothub.MessageStatus{}, err
	}
	var out iothub.MessageStatus
	return out, decodeBody(resp, data, &out)
}

// Purge deletes every pending message of a device.
func (c *Client) Purge(ctx context.Context, deviceID string) (iothub.PurgeResult, error) {
	resp, data, err := c.do(ctx, request{method: http.MethodDelete, path: devicePath(deviceID) + "/commands", auth: true})
	if err != nil {
		return iothub.PurgeResult{}, err
	}
	var out iothub.PurgeResult
	return out, decodeBody(resp, data, &out)
}

// ---- feedback ----

// ReceiveFeedback locks the next feedback batch, waiting up to wait (0: answer at once; the hub caps
// it at 60 s). It returns nil, nil when nothing arrived. Complete or abandon the batch by its
// LockToken before its lock expires.
func (c *Client) ReceiveFeedback(ctx context.Context, wait time.Duration) (*iothub.FeedbackBatch, error) {
	req := request{method: http.MethodGet, path: "/messages/serviceBound/feedback", auth: true, wait: wait}
	if wait > 0 {
		req.query = url.Values{"wait": {wait.String()}}
	}
	resp, data, err := c.do(ctx, req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusNoContent {
		return nil, nil
	}
	b := &iothub.FeedbackBatch{LockToken: unquoteETag(resp.Header.Get("ETag"))}
	if b.LockToken == "" {
		return nil, fmt.Errorf("apiclient: feedback answer has no ETag (lock token)")
	}
	if t := resp.Header.Get("iothub-enqueuedtime"); t != "" {
		if et, err := time.Parse(time.RFC3339Nano, t); err == nil {
			b.EnqueuedTimeUTC = et
		}
	}
	return b, decodeBody(resp, data, &b.Records)
}

// CompleteFeedback deletes a received batch; *iothub.Error 412002 DeviceMessageLockLost when its lock
// expired (the batch will be delivered again).
func (c *Client) CompleteFeedback(ctx context.Context, lockToken string) error {
	_, _, err := c.do(ctx, request{method: http.MethodDelete, path: "/messages/serviceBound/feedback/" + url.PathEscape(lockToken), auth: true})
	return err
}

// AbandonFeedback gives a received batch back for redelivery.
func (c *Client) AbandonFeedback(ctx context.Context, lockToken string) error {
	_, _, err := c.do(ctx, request{method: http.MethodPost, path: "/messages/serviceBound/feedback/" + url.PathEscape(lockToken) + "/abandon", auth: true})
	return err
}

// ---- hub ----

// Status returns the hub's statistics.
func (c *Client) Status(ctx context.Context) (iothub.HubStatus, error) {
	resp, data, err := c.do(ctx, request{method: http.MethodGet, path: "/statistics/service", auth: true})
	if err != nil {
		return iothub.HubStatus{}, err
	}
	var out iothub.HubStatus
	return out, decodeBody(resp, data, &out)
}

// Health is /healthz's answer.
type Health struct {
	Status  string `json:"status"`
	Version string `json:"version"`
	Error   string `json:"error,omitempty"`
}

// Health calls /healthz (no authentication). A hub that answers 503 returns its Health and an
// *iothub.Error with code 503000.
func (c *Client) Health(ctx context.Context) (Health, error) {
	resp, data, err := c.do(ctx, request{method: http.MethodGet, path: "/healthz"})
	var h Health
	if resp != nil && len(data) > 0 {
		_ = json.Unmarshal(data, &h)
	}
	if err != nil {
		if h.Error != "" {
			return h, &iothub.Error{Code: iothub.ErrorCode(resp.StatusCode * 1000), Detail: "hub unhealthy: " + h.Error}
		}
		return h, err
	}
	return h, nil
}
