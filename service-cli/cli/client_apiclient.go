package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/c2d-project/c2d/cloud/apiclient"
	"github.com/c2d-project/c2d/cloud/iothub"
	"github.com/c2d-project/c2d/internal/version"
)

// apiClient adapts *apiclient.Client to hubClient.
type apiClient struct{ *apiclient.Client }

// newAPIClient makes the hub client; with trace (--verbose) every request and its answer is
// printed there.
func newAPIClient(cs iothub.ServiceConnectionString, endpoint string, roots *x509.CertPool, trace io.Writer) (hubClient, error) {
	opt := apiclient.Options{Endpoint: endpoint, RootCAs: roots, UserAgent: "c2d/" + version.Version}
	if trace != nil {
		// The same transport apiclient builds, wrapped; no Client.Timeout (deadlines come from
		// contexts, so long-polls are not cut).
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
		tr.TLSHandshakeTimeout = 10 * time.Second
		tr.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
		opt.HTTPClient = &http.Client{Transport: verboseTransport{next: tr, w: trace}}
	}
	c, err := apiclient.New(cs, opt)
	if err != nil {
		return nil, err
	}
	return apiClient{c}, nil
}

// verboseTransport prints `> GET http://…/devices/x?api-version=…` before each request and
// `< 200 OK (3ms, 512 bytes)` after it. The Authorization header (a SAS token) is never printed.
type verboseTransport struct {
	next http.RoundTripper
	w    io.Writer
}

func (t verboseTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	fmt.Fprintf(t.w, "> %s %s\n", r.Method, r.URL.Redacted())
	if m := r.Header.Get("If-Match"); m != "" {
		fmt.Fprintf(t.w, ">   If-Match: %s\n", m)
	}
	start := time.Now()
	resp, err := t.next.RoundTrip(r)
	took := time.Since(start).Round(time.Millisecond)
	if err != nil {
		fmt.Fprintf(t.w, "< failed after %s: %v\n", took, err)
		return nil, err
	}
	fmt.Fprintf(t.w, "< %s (%s, %d bytes)\n", resp.Status, took, resp.ContentLength)
	return resp, nil
}

func (c apiClient) DeleteDevice(ctx context.Context, id string) error {
	return c.Client.DeleteDevice(ctx, id, "")
}

func (c apiClient) Health(ctx context.Context) (health, error) {
	h, err := c.Client.Health(ctx)
	return health{Status: h.Status, Version: h.Version}, err
}
