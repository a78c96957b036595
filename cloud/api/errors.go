package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/c2d-project/c2d/cloud/hub"
	"github.com/c2d-project/c2d/cloud/iothub"
)

// httpError is a failure with no Azure error code (an unknown route): plain status and message.
type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &iothub.Error{Code: iothub.CodeArgumentInvalid, Detail: fmt.Sprintf(format, args...)}
}

// sentinelCodes maps the hub's typed outcomes to Azure's codes, for errors that are not already an
// *iothub.Error.
var sentinelCodes = []struct {
	err  error
	code iothub.ErrorCode
}{
	{hub.ErrDeviceNotFound, iothub.CodeDeviceNotFound},
	{hub.ErrDeviceExists, iothub.CodeDeviceAlreadyExists},
	{hub.ErrQueueFull, iothub.CodeDeviceMaximumQueueDepthExceeded},
	{hub.ErrMessageNotFound, iothub.CodeDeviceMessageNotFound},
	{hub.ErrLockLost, iothub.CodeDeviceMessageLockLost},
	{hub.ErrPreconditionFailed, iothub.CodePreconditionFailed},
	{hub.ErrInvalidArgument, iothub.CodeArgumentInvalid},
	{hub.ErrUnauthorized, iothub.CodeIotHubUnauthorizedAccess},
	{hub.ErrDeviceDisabled, iothub.CodeArgumentInvalid},
	{hub.ErrClosed, iothub.CodeServiceUnavailable},
	{hub.ErrStoreUnavailable, iothub.CodeServiceUnavailable},
}

// toAPIError turns any handler error into the *iothub.Error the client sees.
func toAPIError(err error) *iothub.Error {
	var ae *iothub.Error
	if errors.As(err, &ae) {
		return ae
	}
	for _, sc := range sentinelCodes {
		if errors.Is(err, sc.err) {
			return &iothub.Error{Code: sc.code, Detail: err.Error()}
		}
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return &iothub.Error{Code: iothub.CodeServiceUnavailable, Detail: "the request was cancelled: " + err.Error()}
	}
	return nil
}

func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var he *httpError
	if errors.As(err, &he) {
		_ = writeJSON(w, he.status, map[string]string{"Message": he.msg, "detail": he.msg})
		return
	}
	ae := toAPIError(err)
	if ae == nil {
		// Unexpected: log the cause, do not leak internals beyond one line.
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		ae = &iothub.Error{Code: iothub.CodeServerError, Detail: err.Error()}
	} else if ae.Code.HTTPStatus() >= 500 {
		s.log.Warn("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	// Written even when the client seems gone: a handler that writes nothing is answered 200 by
	// net/http, and a client whose cancel raced the answer could read that as a success.
	status := ae.Code.HTTPStatus()
	if status < 400 || status > 599 {
		status = http.StatusInternalServerError
	}
	// Azure names the code in a header too; the service SDKs read it (azure-methods-twin.md).
	w.Header().Set("iothub-errorcode", ae.CodeName())
	_ = writeJSON(w, status, ae.Response())
}
