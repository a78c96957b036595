package api

import (
	"net/http"
	"strconv"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// events serves the hub's in-memory log of device-to-cloud events (c2d's extension of the service
// API; Azure routes D2C events to Event Hubs instead): `?after=N` (default: from now on),
// `&deviceId=ID`, `&limit=` (1..1000, default 100), `&wait=` long-polls for the first event.
// Reading consumes nothing.
func (s *Server) events(w http.ResponseWriter, r *http.Request) error {
	if s.opt.Events == nil {
		return &httpError{status: http.StatusNotFound, msg: "this hub serves no device-to-cloud events"}
	}
	q := r.URL.Query()
	after := int64(-1)
	if v := q.Get("after"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return badRequest("after: %q is not a sequence number (0 or more)", v)
		}
		after = n
	}
	limit := 100
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return badRequest("limit: %q is not in 1..1000", v)
		}
		limit = n
	}
	dev := q.Get("deviceId")
	if dev != "" {
		if err := iothub.ValidateDeviceID(dev); err != nil {
			return badRequest("deviceId: %v", err)
		}
	}
	wait, err := parseWait(r)
	if err != nil {
		return err
	}
	ctx, cancel := s.pollContext(r.Context(), max(wait, immediate))
	defer cancel()
	evs, next := s.opt.Events.EventsSince(ctx, after, dev, limit)
	return writeJSON(w, http.StatusOK, iothub.EventsAnswer{Events: evs, Next: next})
}
