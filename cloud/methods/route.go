package methods

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/c2d-project/c2d/cloud/apiclient"
	"github.com/c2d-project/c2d/cloud/hub"
	"github.com/c2d-project/c2d/cloud/iothub"
)

// ServicePolicy is the shared access policy whose key signs forwarded calls (it has
// ServiceConnect, which is what POST /twins/{id}/methods needs).
const ServicePolicy = "service"

// forwardMargin is added to a forwarded call's response and connect timeouts for its HTTP
// exchange: the device's node ends the call itself (504101) at its timeouts, and its answer must
// still arrive here.
const forwardMargin = 5 * time.Second

// routeRecheck is how often a call waiting for its device to connect (connectTimeoutInSeconds)
// looks whether it connected to another node; wake-ups between nodes carry no methods readiness.
const routeRecheck = time.Second

// Router tells where a device's session is and signs for the other nodes; *hub.Hub implements it.
type Router interface {
	DeviceRoute(ctx context.Context, deviceID string) (hub.NodeRoute, bool, error)
	Policy(name string) (hub.Policy, bool)
	Node() string
}

var _ Router = (*hub.Hub)(nil)

// Forwarder passes direct-method calls to the node holding the device (its service API, one HTTP
// exchange), authenticated with a SAS token of the shared service policy. Safe for concurrent use.
type Forwarder struct {
	r   Router
	log *slog.Logger
	hc  *http.Client

	mu      sync.Mutex
	clients map[string]*nodeClient // node id → client
}

type nodeClient struct {
	route hub.NodeRoute
	key   string // the policy key its tokens are signed with
	c     *apiclient.Client
}

// NewForwarder returns a Forwarder trusting roots for the other nodes' HTTPS (the cluster's CA;
// nil: the system's roots).
func NewForwarder(r Router, roots *x509.CertPool, log *slog.Logger) *Forwarder {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DialContext = (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	tr.TLSHandshakeTimeout = 5 * time.Second
	tr.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	hc := &http.Client{Transport: markForwarded{rt: tr, node: r.Node()}}
	return &Forwarder{r: r, log: log, hc: hc, clients: map[string]*nodeClient{}}
}

// markForwarded sets ForwardedHeader on every request.
type markForwarded struct {
	rt   http.RoundTripper
	node string
}

func (m markForwarded) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(iothub.ForwardedHeader, m.node)
	return m.rt.RoundTrip(r)
}

// forward runs the call on the node holding deviceID when that is another live node; handled is
// false when there is none (the caller answers 404103 or waits). The answer is the device's node's,
// passed through: the device's status and payload, or its 404103 / 504101 / 404001.
func (f *Forwarder) forward(ctx context.Context, deviceID string, req iothub.MethodRequest, respTimeout, connTimeout time.Duration) (_ iothub.MethodResult, handled bool, _ error) {
	route, ok, err := f.r.DeviceRoute(ctx, deviceID)
	if err != nil {
		return iothub.MethodResult{}, true, fmt.Errorf("direct method to %s: find the node holding it: %w", deviceID, err)
	}
	if !ok {
		return iothub.MethodResult{}, false, nil
	}
	c, err := f.client(route)
	if err != nil {
		return iothub.MethodResult{}, true, err
	}
	secs := int(connTimeout / time.Second)
	req.ConnectTimeoutInSeconds = &secs
	rsecs := int(respTimeout / time.Second)
	req.ResponseTimeoutInSeconds = &rsecs
	fctx, cancel := context.WithTimeout(ctx, respTimeout+connTimeout+forwardMargin)
	defer cancel()
	began := time.Now()
	res, err := c.InvokeMethod(fctx, deviceID, req)
	var ae *iothub.Error
	switch {
	case err == nil:
		f.log.Debug("direct method forwarded", "device", deviceID, "method", req.MethodName, "node", route.Node, "status", res.Status, "took", time.Since(began))
		return res, true, nil
	case errors.As(err, &ae):
		return iothub.MethodResult{}, true, ae // the device's node's answer, as it gave it
	case ctx.Err() != nil:
		return iothub.MethodResult{}, true, ctx.Err()
	case fctx.Err() != nil:
		f.log.Warn("forwarded direct method: no answer from the device's node in time", "device", deviceID, "node", route.Node, "url", route.APIURL)
		return iothub.MethodResult{}, true, &iothub.Error{Code: iothub.CodeGatewayTimeout,
			Detail: fmt.Sprintf("Timed out waiting for node %s (holding device %q) to answer method %q (%v)", route.Node, deviceID, req.MethodName, respTimeout+connTimeout+forwardMargin)}
	default:
		// The node holding the session cannot be reached (it died, or a partition): its device
		// is as good as offline; it reconnects to another node within seconds.
		f.log.Warn("forwarded direct method: the device's node cannot be reached", "device", deviceID, "node", route.Node, "url", route.APIURL, "err", err)
		return iothub.MethodResult{}, true, iothub.NotOnline("device %q is held by node %s, which cannot be reached (%v)", deviceID, route.Node, err)
	}
}

// client returns the API client for route's node, made again when its address or the policy's
// key changed.
func (f *Forwarder) client(route hub.NodeRoute) (*apiclient.Client, error) {
	pol, ok := f.r.Policy(ServicePolicy)
	if !ok {
		return nil, fmt.Errorf("forward a direct method to node %s: no %q policy in the registry", route.Node, ServicePolicy)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if nc := f.clients[route.Node]; nc != nil && nc.route == route && nc.key == pol.PrimaryKey {
		return nc.c, nil
	}
	cs := iothub.ServiceConnectionString{HostName: route.HostName, SharedAccessKeyName: pol.Name, SharedAccessKey: pol.PrimaryKey}
	c, err := apiclient.New(cs, apiclient.Options{Endpoint: route.APIURL, HTTPClient: f.hc, UserAgent: "c2d-hub/" + f.r.Node()})
	if err != nil {
		return nil, fmt.Errorf("forward a direct method to node %s: %w", route.Node, err)
	}
	f.clients[route.Node] = &nodeClient{route: route, key: pol.PrimaryKey, c: c}
	return c, nil
}
