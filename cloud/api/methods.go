package api

import (
	"context"
	"net/http"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// Methods runs direct methods; *methods.Service implements it.
type Methods interface {
	// Invoke calls the device wherever its session is (in a cluster, through its node).
	Invoke(ctx context.Context, deviceID string, req iothub.MethodRequest) (iothub.MethodResult, error)
	// InvokeLocal tries this node's sessions only: for calls another node forwarded.
	InvokeLocal(ctx context.Context, deviceID string, req iothub.MethodRequest) (iothub.MethodResult, error)
}

// invokeMethod is Azure's `POST /twins/{id}/methods`: 200 with the device's {status, payload}, or
// 404103 DeviceNotOnline / 504101 GatewayTimeout. The call ends when the server drains.
func (s *Server) invokeMethod(w http.ResponseWriter, r *http.Request) error {
	if s.opt.Methods == nil {
		return iothub.NotOnline("this hub serves no MQTT listener, so no device can take direct methods")
	}
	var req iothub.MethodRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	stop := context.AfterFunc(s.drain, cancel)
	defer stop()
	id := r.PathValue("id")
	invoke := s.opt.Methods.Invoke
	if from := r.Header.Get(iothub.ForwardedHeader); from != "" {
		invoke = s.opt.Methods.InvokeLocal
		s.log.Debug("direct method forwarded by another node", "device", id, "method", req.MethodName, "from", from)
	}
	res, err := invoke(ctx, id, req)
	if err != nil {
		return err
	}
	if len(res.Payload) == 0 {
		res.Payload = []byte("null")
	}
	s.log.Debug("direct method answered", "device", id, "method", req.MethodName, "status", res.Status)
	return writeJSON(w, http.StatusOK, res)
}
