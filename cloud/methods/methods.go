package methods

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/c2d-project/c2d/cloud/hub"
	"github.com/c2d-project/c2d/cloud/iothub"
)

// Transport puts a method request on a device's wire; the broker implements it.
type Transport interface {
	// PublishMethod writes one QoS 0 PUBLISH to the device's current session if that session has
	// subscribed to iothub.MethodsFilter; sent is false (err nil) when there is none. It does not
	// block on the network.
	PublishMethod(deviceID, topic string, body []byte) (sent bool, err error)
}

// Registry tells an unknown device from an offline one; *hub.Hub implements it.
type Registry interface {
	GetDevice(ctx context.Context, id string) (iothub.Device, error)
}

var _ Registry = (*hub.Hub)(nil)

// Service runs direct-method calls. Safe for concurrent use.
type Service struct {
	reg Registry
	log *slog.Logger

	transport atomic.Pointer[Transport]
	forwarder atomic.Pointer[Forwarder] // nil: no cluster (route.go)
	rid       atomic.Uint64

	mu      sync.Mutex
	pending map[string]*call                  // $rid → call waiting for its answer
	ready   map[string]map[chan struct{}]bool // device id → callers waiting for it to connect
}

type call struct {
	deviceID string
	method   string
	answer   chan iothub.MethodResult // buffered 1
}

// New returns a Service; SetTransport must be called before the first Invoke succeeds.
func New(reg Registry, log *slog.Logger) *Service {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Service{reg: reg, log: log, pending: map[string]*call{}, ready: map[string]map[chan struct{}]bool{}}
}

// SetTransport sets how requests reach devices (the broker, created after the Service).
func (s *Service) SetTransport(t Transport) { s.transport.Store(&t) }

// SetForwarder makes calls for devices held by another node of the cluster go there (route.go).
func (s *Service) SetForwarder(f *Forwarder) { s.forwarder.Store(f) }

// Invoke calls a direct method on a device and returns its answer. Errors are *iothub.Error (as
// the service API renders them) or the hub's typed errors: 400004 for a bad request, 404001 for
// an unknown device, 404103 DeviceNotOnline, 504101 GatewayTimeout; ctx ending (the caller gone,
// the hub shutting down) returns ctx's error. In a cluster (SetForwarder), a device whose session
// is on another node is called through that node.
func (s *Service) Invoke(ctx context.Context, deviceID string, req iothub.MethodRequest) (iothub.MethodResult, error) {
	return s.invoke(ctx, deviceID, req, s.forwarder.Load())
}

// InvokeLocal is Invoke for a call another node forwarded (iothub.ForwardedHeader): only this node's
// sessions are tried, and the call is never passed on.
func (s *Service) InvokeLocal(ctx context.Context, deviceID string, req iothub.MethodRequest) (iothub.MethodResult, error) {
	return s.invoke(ctx, deviceID, req, nil)
}

func (s *Service) invoke(ctx context.Context, deviceID string, req iothub.MethodRequest, fwd *Forwarder) (iothub.MethodResult, error) {
	respTimeout, connTimeout, err := req.Timeouts()
	if err != nil {
		return iothub.MethodResult{}, &iothub.Error{Code: iothub.CodeArgumentInvalid, Detail: err.Error()}
	}
	body := []byte(req.Payload)
	if len(body) == 0 {
		// Azure's Node device SDK answers an empty body with 400 itself: send JSON null.
		body = []byte("null")
	}
	rid := strconv.FormatUint(s.rid.Add(1), 16) // Azure's form: lowercase hex
	c := &call{deviceID: deviceID, method: req.MethodName, answer: make(chan iothub.MethodResult, 1)}
	s.mu.Lock()
	s.pending[rid] = c
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.pending, rid)
		s.mu.Unlock()
	}()

	var elsewhere func(connLeft time.Duration) (iothub.MethodResult, bool, error)
	if fwd != nil {
		elsewhere = func(connLeft time.Duration) (iothub.MethodResult, bool, error) {
			return fwd.forward(ctx, deviceID, req, respTimeout, connLeft)
		}
	}
	if res, err := s.publish(ctx, deviceID, iothub.MethodRequestTopic(req.MethodName, rid), body, connTimeout, elsewhere); res != nil || err != nil {
		if res == nil {
			return iothub.MethodResult{}, err
		}
		return *res, err
	}
	if s.log.Enabled(ctx, slog.LevelDebug) {
		s.log.Debug("direct method sent", "device", deviceID, "method", req.MethodName, "rid", rid, "timeout", respTimeout)
	}
	t := time.NewTimer(respTimeout)
	defer t.Stop()
	select {
	case res := <-c.answer:
		return res, nil
	case <-t.C:
		s.log.Info("direct method timed out", "device", deviceID, "method", req.MethodName, "rid", rid, "timeout", respTimeout)
		return iothub.MethodResult{}, &iothub.Error{Code: iothub.CodeGatewayTimeout,
			Detail: fmt.Sprintf("Timed out waiting for the response from device %q to method %q (%v)", deviceID, req.MethodName, respTimeout)}
	case <-ctx.Done():
		return iothub.MethodResult{}, ctx.Err()
	}
}

// publish sends the request now, or — with a connect timeout — as soon as the device connects
// with the methods subscription within it. The registry is read only when the device has no
// session that takes methods (to tell 404001 from 404103): a device with a live session exists
// and is enabled, since deleting, disabling or re-keying a device drops its session, so the
// common path costs no store read.
//
// elsewhere (nil: local sessions only) is tried whenever no local session takes the request: when
// another node holds the device it runs the whole call there and publish returns its answer
// (res non-nil); it is given what is left of the connect timeout.
func (s *Service) publish(ctx context.Context, deviceID, topic string, body []byte, connTimeout time.Duration,
	elsewhere func(connLeft time.Duration) (iothub.MethodResult, bool, error)) (res *iothub.MethodResult, _ error) {
	tp := s.transport.Load()
	if tp == nil {
		return nil, iothub.NotOnline("device %q: this hub has no MQTT listener", deviceID)
	}
	began := time.Now()
	var deadline <-chan time.Time
	if connTimeout > 0 {
		t := time.NewTimer(connTimeout)
		defer t.Stop()
		deadline = t.C
	}
	var recheck <-chan time.Time
	if elsewhere != nil && deadline != nil {
		t := time.NewTicker(routeRecheck)
		defer t.Stop()
		recheck = t.C
	}
	for checked := false; ; {
		// Register before trying, so a connect between the try and the wait is not missed.
		ch := make(chan struct{}, 1)
		s.mu.Lock()
		if s.ready[deviceID] == nil {
			s.ready[deviceID] = map[chan struct{}]bool{}
		}
		s.ready[deviceID][ch] = true
		s.mu.Unlock()
		sent, err := (*tp).PublishMethod(deviceID, topic, body)
		if sent || err != nil || deadline == nil {
			s.unready(deviceID, ch)
		}
		if !sent && err == nil && !checked {
			checked = true
			if _, gerr := s.reg.GetDevice(ctx, deviceID); gerr != nil {
				if deadline != nil {
					s.unready(deviceID, ch)
				}
				return nil, gerr
			}
		}
		if !sent && err == nil && elsewhere != nil {
			if r, handled, ferr := elsewhere(max(0, connTimeout-time.Since(began))); handled {
				if deadline != nil {
					s.unready(deviceID, ch)
				}
				return &r, ferr
			}
		}
		switch {
		case err != nil:
			return nil, fmt.Errorf("direct method to %s: %w", deviceID, err)
		case sent:
			return nil, nil
		case deadline == nil:
			return nil, iothub.NotOnline("device %q is not connected (or has not subscribed to direct methods); "+
				"connectTimeoutInSeconds waits for it", deviceID)
		}
		select {
		case <-ch:
		case <-recheck: // connected to another node meanwhile?
		case <-deadline:
			s.unready(deviceID, ch)
			return nil, iothub.NotOnline("Timed out waiting for device %q to connect (%v)", deviceID, connTimeout)
		case <-ctx.Done():
			s.unready(deviceID, ch)
			return nil, ctx.Err()
		}
		s.unready(deviceID, ch)
	}
}

func (s *Service) unready(deviceID string, ch chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.ready[deviceID], ch)
	if len(s.ready[deviceID]) == 0 {
		delete(s.ready, deviceID)
	}
}

// MethodsReady is called by the broker when a session of the device can take method requests (its
// methods SUBACK is on the wire, or a resumed session holds the subscription).
func (s *Service) MethodsReady(deviceID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ch := range s.ready[deviceID] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// MethodResponse is called by the broker with a device's answer. An answer nobody waits for (late,
// unknown $rid, another device's $rid) is logged and dropped; an oversized payload becomes a 500
// answer naming the limit, so the caller is not left waiting.
func (s *Service) MethodResponse(deviceID, rid string, status int, body []byte) {
	s.mu.Lock()
	c, ok := s.pending[rid]
	if ok && c.deviceID == deviceID {
		delete(s.pending, rid)
	}
	s.mu.Unlock()
	if !ok || c.deviceID != deviceID {
		s.log.Info("direct-method answer nobody waits for (late, or unknown $rid): dropped", "device", deviceID, "rid", rid, "status", status)
		return
	}
	res := iothub.MethodResult{Status: status, Payload: iothub.MethodPayload(body)}
	if len(res.Payload) > iothub.MaxMethodPayload {
		s.log.Warn("direct-method answer too large", "device", deviceID, "method", c.method, "bytes", len(body))
		msg, _ := json.Marshal(fmt.Sprintf("the device answered with %d bytes, more than direct methods' %d", len(body), iothub.MaxMethodPayload))
		res = iothub.MethodResult{Status: 500, Payload: msg}
	}
	c.answer <- res
}

// Pending is the number of calls waiting for an answer (metrics, tests).
func (s *Service) Pending() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pending)
}

// Waiting is the number of calls waiting for deviceID to connect (tests).
func (s *Service) Waiting(deviceID string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.ready[deviceID])
}
