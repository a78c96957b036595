package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/c2d-project/c2d/cloud/iothub"
	"github.com/c2d-project/c2d/cloud/twin"
)

// Twins serves device twins; *twin.Service implements it.
type Twins interface {
	Get(ctx context.Context, id string) (twin.Twin, error)
	Update(ctx context.Context, id string, body []byte, ifMatch string, replace bool) (twin.Twin, error)
}

var _ Twins = (*twin.Service)(nil)

func (s *Server) twinsOff() error {
	return &httpError{status: http.StatusNotFound, msg: "this hub serves no device twins"}
}

func (s *Server) getTwin(w http.ResponseWriter, r *http.Request) error {
	if s.opt.Twins == nil {
		return s.twinsOff()
	}
	t, err := s.opt.Twins.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	w.Header().Set("ETag", quoteETag(t.ETag))
	return writeJSON(w, http.StatusOK, t)
}

// updateTwin is PATCH (merge) and PUT (replace) /twins/{id}, with If-Match (`"*"` or absent:
// unconditional).
func (s *Server) updateTwin(replace bool) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if s.opt.Twins == nil {
			return s.twinsOff()
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return &iothub.Error{Code: iothub.CodeMessageTooLarge, Detail: fmt.Sprintf("request body is larger than %d bytes", mbe.Limit)}
			}
			return badRequest("request body: %v", err)
		}
		t, err := s.opt.Twins.Update(r.Context(), r.PathValue("id"), body, etagValue(r.Header.Get("If-Match")), replace)
		if err != nil {
			return err
		}
		w.Header().Set("ETag", quoteETag(t.ETag))
		return writeJSON(w, http.StatusOK, t)
	}
}
