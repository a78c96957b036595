package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/c2d-project/c2d/cloud/hub"
	"github.com/c2d-project/c2d/cloud/iothub"
)

// Core is what the API needs of the hub; *hub.Hub implements it.
type Core interface {
	Send(ctx context.Context, deviceID string, req iothub.SendRequest) (iothub.SendResult, error)
	Queue(ctx context.Context, deviceID string) ([]iothub.MessageStatus, error)
	MessageStatus(ctx context.Context, deviceID, messageID string) (iothub.MessageStatus, error)
	WaitSettled(ctx context.Context, deviceID, messageID string) (iothub.MessageStatus, error)
	Purge(ctx context.Context, deviceID string) (iothub.PurgeResult, error)
	ReceiveFeedback(ctx context.Context) (*iothub.FeedbackBatch, error)
	CompleteFeedback(ctx context.Context, lockToken string) error
	AbandonFeedback(ctx context.Context, lockToken string) error
	PutDevice(ctx context.Context, d iothub.Device, ifMatch string) (iothub.Device, bool, error)
	GetDevice(ctx context.Context, id string) (iothub.Device, error)
	DeleteDevice(ctx context.Context, id, ifMatch string) error
	ListDevices(ctx context.Context) ([]iothub.Device, error)
	Policy(name string) (hub.Policy, bool)
	RenewPolicyKey(ctx context.Context, name string, which hub.RenewKey) (hub.Policy, error)
	Status(ctx context.Context) (iothub.HubStatus, error)
}

var _ Core = (*hub.Hub)(nil)

// MaxWait bounds every long-poll (`wait` query parameter).
const MaxWait = 60 * time.Second

// immediate is how long a "don't wait" (wait=0) feedback receive may take to look.
const immediate = 100 * time.Millisecond

// maxBodyBytes bounds request bodies: a 64 KB message is about 88 KB as base64 JSON plus its
// properties; anything much bigger cannot be a valid request.
const maxBodyBytes = 512 << 10

// Options configures a Server.
type Options struct {
	Hub      Core
	HostName string // the hub's name: policy tokens must be signed for it (sr)
	Version  string // reported by /healthz
	Metrics  *Metrics
	Logger   *slog.Logger
	// Ready reports whether the hub's parts outside the store (the broker) are up; nil means yes.
	// /healthz answers 503 with its error.
	Ready func() error
	// Now is the clock used to check token expiry; nil means time.Now.
	Now func() time.Time
	// Events is the log of device-to-cloud events served at GET /messages/events (events.go);
	// nil: that route answers 404.
	Events *hub.EventLog
	// Methods runs direct methods (POST /twins/{id}/methods); nil answers 404103 DeviceNotOnline.
	Methods Methods
	// Twins serves GET/PATCH/PUT /twins/{id}; nil answers 404.
	Twins Twins
}

// Server is the service API as an http.Handler.
type Server struct {
	opt   Options
	log   *slog.Logger
	now   func() time.Time
	mux   *http.ServeMux
	drain context.Context // done once Drain is called
	stop  context.CancelFunc
	polls atomic.Int64
}

// New builds the handler. Options.Hub and Options.HostName are required.
func New(opt Options) *Server {
	s := &Server{opt: opt, log: opt.Logger, now: opt.Now, mux: http.NewServeMux()}
	s.drain, s.stop = context.WithCancel(context.Background())
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.opt.Metrics == nil {
		s.opt.Metrics = NewMetrics()
	}
	s.opt.Metrics.WatchStatus(opt.Hub.Status)
	s.routes()
	return s
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Drain ends every running long-poll now (each answers with what it has) and makes new ones answer
// at once; call it before http.Server.Shutdown so shutdown need not wait up to MaxWait.
func (s *Server) Drain() { s.stop() }

// LongPolls is how many long-polls are waiting right now.
func (s *Server) LongPolls() int { return int(s.polls.Load()) }

// Metrics returns the server's metrics (its registry serves /metrics).
func (s *Server) Metrics() *Metrics { return s.opt.Metrics }

type handlerFunc func(w http.ResponseWriter, r *http.Request) error

func (s *Server) routes() {
	// Rights per route (api.md). Statistics accept either of two rights.
	read := []hub.Permission{hub.RegistryRead}
	write := []hub.Permission{hub.RegistryWrite}
	svc := []hub.Permission{hub.ServiceConnect}
	stats := []hub.Permission{hub.ServiceConnect, hub.RegistryRead}

	s.handle("PUT /devices/{id}", write, s.putDevice)
	s.handle("GET /devices/{id}", read, s.getDevice)
	s.handle("DELETE /devices/{id}", write, s.deleteDevice)
	s.handle("GET /devices", read, s.listDevices)
	s.handle("GET /devices/{$}", read, s.listDevices) // Azure's Node Registry.list asks with a trailing slash
	s.handle("POST /devices/query", read, s.queryDevices)
	s.handle("POST /devices/{id}/messages/devicebound", svc, s.send)
	s.handle("GET /devices/{id}/messages/devicebound", svc, s.queue)
	s.handle("GET /devices/{id}/messages/devicebound/{messageId}", svc, s.messageStatus)
	s.handle("DELETE /devices/{id}/commands", svc, s.purge)
	s.handle("GET /messages/serviceBound/feedback", svc, s.receiveFeedback)
	s.handle("DELETE /messages/serviceBound/feedback/{lockToken}", svc, s.completeFeedback)
	s.handle("POST /messages/serviceBound/feedback/{lockToken}/abandon", svc, s.abandonFeedback)
	s.handle("POST /twins/{id}/methods", svc, s.invokeMethod)
	s.handle("GET /twins/{id}", read, s.getTwin)
	s.handle("PATCH /twins/{id}", write, s.updateTwin(false))
	s.handle("PUT /twins/{id}", write, s.updateTwin(true))
	s.handle("GET /statistics/service", stats, s.status)
	s.handle("GET /messages/events", svc, s.events)
	s.handle("POST /policies/{name}/renew-key", write, s.renewPolicyKey)
	s.handle("GET /healthz", nil, s.healthz)
	s.mux.Handle("GET /metrics", s.instrument("GET /metrics", s.opt.Metrics.Handler()))
	s.handle("/", nil, func(w http.ResponseWriter, r *http.Request) error {
		return &httpError{status: http.StatusNotFound, msg: fmt.Sprintf("no route %s %s (see docs/api.md)", r.Method, r.URL.Path)}
	})
}

// handle registers fn under pattern with authentication (when rights is non-nil), error rendering
// and metrics labelled by the pattern.
func (s *Server) handle(pattern string, rights []hub.Permission, fn handlerFunc) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rights != nil {
			if err := s.authorize(r, rights); err != nil {
				s.writeError(w, r, err)
				return
			}
		}
		if r.Body != nil {
			r.Body = http.MaxBytesReader(w, r.Body, maxBodyBytes)
		}
		if err := fn(w, r); err != nil {
			s.writeError(w, r, err)
		}
	})
	s.mux.Handle(pattern, s.instrument(pattern, h))
}

// instrument counts requests and their latency by route and status code.
func (s *Server) instrument(route string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK, start: start}
		h.ServeHTTP(sw, r)
		d := time.Since(start)
		s.opt.Metrics.observeHTTP(route, sw.code, d)
		s.log.Debug("http request", "method", r.Method, "path", r.URL.Path, "route", route, "code", sw.code,
			"duration", d, "remote", r.RemoteAddr)
	})
}

type statusWriter struct {
	http.ResponseWriter
	code  int
	wrote bool
	start time.Time // when the handler chain began (hub.StageDecodeAuth)
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.code, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// ---- registry ----

func (s *Server) putDevice(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	var d iothub.Device
	if err := decodeJSON(r, &d); err != nil {
		return err
	}
	if d.DeviceID == "" {
		d.DeviceID = id
	}
	if d.DeviceID != id {
		return badRequest("deviceId: body says %q but the URL says %q", d.DeviceID, id)
	}
	// Azure's SDKs send the etag in the body too; only If-Match makes an update conditional.
	dev, created, err := s.opt.Hub.PutDevice(r.Context(), d, etagValue(r.Header.Get("If-Match")))
	if err != nil {
		return err
	}
	if created {
		s.log.Info("device created", "device", dev.DeviceID)
	} else {
		s.log.Info("device updated", "device", dev.DeviceID, "status", dev.Status)
	}
	w.Header().Set("ETag", quoteETag(dev.ETag))
	return writeJSON(w, http.StatusOK, dev)
}

func (s *Server) getDevice(w http.ResponseWriter, r *http.Request) error {
	dev, err := s.opt.Hub.GetDevice(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	w.Header().Set("ETag", quoteETag(dev.ETag))
	return writeJSON(w, http.StatusOK, dev)
}

func (s *Server) deleteDevice(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if err := s.opt.Hub.DeleteDevice(r.Context(), id, etagValue(r.Header.Get("If-Match"))); err != nil {
		return err
	}
	s.log.Info("device deleted", "device", id)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) listDevices(w http.ResponseWriter, r *http.Request) error {
	top := -1
	if v := r.URL.Query().Get("top"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return badRequest("top: %q is not a non-negative integer", v)
		}
		top = n
	}
	devs, err := s.opt.Hub.ListDevices(r.Context())
	if err != nil {
		return err
	}
	if devs == nil {
		devs = []iothub.Device{}
	}
	if top >= 0 && top < len(devs) {
		devs = devs[:top]
	}
	return writeJSON(w, http.StatusOK, devs)
}

// ---- messages ----

func (s *Server) send(w http.ResponseWriter, r *http.Request) error {
	var req iothub.SendRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if sw, ok := w.(*statusWriter); ok {
		s.opt.Metrics.observeStage(hub.StageDecodeAuth, time.Since(sw.start))
	}
	res, err := s.opt.Hub.Send(r.Context(), r.PathValue("id"), req)
	if err != nil {
		return err
	}
	w.Header().Set("Location", r.URL.EscapedPath()+"/"+url.PathEscape(res.MessageID))
	return writeJSON(w, http.StatusCreated, res)
}

func (s *Server) queue(w http.ResponseWriter, r *http.Request) error {
	q, err := s.opt.Hub.Queue(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	if q == nil {
		q = []iothub.MessageStatus{}
	}
	return writeJSON(w, http.StatusOK, q)
}

func (s *Server) messageStatus(w http.ResponseWriter, r *http.Request) error {
	wait, err := parseWait(r)
	if err != nil {
		return err
	}
	id, mid := r.PathValue("id"), r.PathValue("messageId")
	st, err := s.opt.Hub.MessageStatus(r.Context(), id, mid)
	if err != nil {
		return err
	}
	if st.Outcome == "" && wait > 0 {
		ctx, cancel := s.pollContext(r.Context(), wait)
		defer cancel()
		cur, werr := s.opt.Hub.WaitSettled(ctx, id, mid)
		switch {
		case werr == nil:
			st = cur
		case ctx.Err() != nil && r.Context().Err() == nil:
			// The wait elapsed (or the server is draining): answer with where the message is now.
			if cur.MessageID != "" {
				st = cur
			}
		default:
			return werr
		}
	}
	return writeJSON(w, http.StatusOK, st)
}

func (s *Server) purge(w http.ResponseWriter, r *http.Request) error {
	res, err := s.opt.Hub.Purge(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	s.log.Info("queue purged", "device", res.DeviceID, "purged", res.TotalMessagesPurged)
	return writeJSON(w, http.StatusOK, res)
}

// ---- feedback ----

func (s *Server) receiveFeedback(w http.ResponseWriter, r *http.Request) error {
	wait, err := parseWait(r)
	if err != nil {
		return err
	}
	// wait=0 still gets a moment: the hub checks for a ready batch before it waits, and a context
	// already done would refuse to look at all.
	ctx, cancel := s.pollContext(r.Context(), max(wait, immediate))
	defer cancel()
	b, err := s.opt.Hub.ReceiveFeedback(ctx)
	if err != nil {
		if ctx.Err() != nil && r.Context().Err() == nil {
			w.WriteHeader(http.StatusNoContent)
			return nil
		}
		return err
	}
	if b == nil {
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	recs := b.Records
	if recs == nil {
		recs = []iothub.FeedbackRecord{}
	}
	w.Header().Set("ETag", quoteETag(b.LockToken))
	w.Header().Set("iothub-enqueuedtime", b.EnqueuedTimeUTC.UTC().Format(time.RFC3339Nano))
	w.Header().Set("Content-Type", iothub.FeedbackContentType)
	return writeJSONType(w, http.StatusOK, "", recs)
}

func (s *Server) completeFeedback(w http.ResponseWriter, r *http.Request) error {
	if err := s.opt.Hub.CompleteFeedback(r.Context(), etagValue(r.PathValue("lockToken"))); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) abandonFeedback(w http.ResponseWriter, r *http.Request) error {
	if err := s.opt.Hub.AbandonFeedback(r.Context(), etagValue(r.PathValue("lockToken"))); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// ---- hub ----

func (s *Server) status(w http.ResponseWriter, r *http.Request) error {
	st, err := s.opt.Hub.Status(r.Context())
	if err != nil {
		return err
	}
	if st.Version == "" {
		st.Version = s.opt.Version
	}
	return writeJSON(w, http.StatusOK, st)
}

// Health is the body of /healthz.
type Health struct {
	Status  string `json:"status"` // ok | unavailable
	Version string `json:"version"`
	Error   string `json:"error,omitempty"`
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	h := Health{Status: "ok", Version: s.opt.Version}
	// Every failing part is named, not only the first: one cause (running out of descriptors)
	// can fail the store and a listener at once, and the operator needs to see both.
	var errs []string
	if _, err := s.opt.Hub.Status(ctx); err != nil {
		errs = append(errs, fmt.Sprintf("store: %v", err))
	}
	if s.opt.Ready != nil {
		if err := s.opt.Ready(); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		h.Status, h.Error = "unavailable", strings.Join(errs, "; ")
		return writeJSON(w, http.StatusServiceUnavailable, h)
	}
	return writeJSON(w, http.StatusOK, h)
}

// ---- helpers ----

// pollContext bounds a long-poll by wait and ends it when the server drains.
func (s *Server) pollContext(parent context.Context, wait time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(parent, wait)
	stop := context.AfterFunc(s.drain, cancel)
	s.polls.Add(1)
	return ctx, func() { s.polls.Add(-1); stop(); cancel() }
}

// parseWait reads the `wait` query parameter: a Go duration ("30s") or whole seconds ("30"),
// clamped to MaxWait; absent means 0 (answer at once).
func parseWait(r *http.Request) (time.Duration, error) {
	v := r.URL.Query().Get("wait")
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		n, nerr := strconv.Atoi(v)
		switch {
		case errors.Is(nerr, strconv.ErrRange) && v[0] != '-':
			n = int(MaxWait / time.Second) // clamped below like any long wait
		case nerr != nil:
			return 0, badRequest("wait: %q is not a duration (e.g. 30s)", v)
		}
		// Whole seconds, saturating: 9223372036854775807 must not wrap negative.
		d = time.Duration(min(n, int(MaxWait/time.Second)+1)) * time.Second
		if n < 0 {
			d = -1
		}
	}
	if d < 0 {
		return 0, badRequest("wait: %q is negative", v)
	}
	return min(d, MaxWait), nil
}

// decodeJSON reads a JSON body strictly: unknown fields are refused so that a misspelt field
// (say "expiry" for "expiryTimeUtc") is an error, not a silently ignored setting.
func decodeJSON(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return &iothub.Error{Code: iothub.CodeMessageTooLarge, Detail: fmt.Sprintf("request body is larger than %d bytes", mbe.Limit)}
		}
		if errors.Is(err, io.EOF) {
			return badRequest("request body is empty; want JSON")
		}
		return badRequest("request body: %v", err)
	}
	if dec.More() {
		return badRequest("request body: data after the JSON value")
	}
	return nil
}

func writeJSON(w http.ResponseWriter, code int, v any) error {
	return writeJSONType(w, code, "application/json; charset=utf-8", v)
}

func writeJSONType(w http.ResponseWriter, code int, contentType string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode answer: %w", err)
	}
	if contentType != "" {
		w.Header().Set("Content-Type", contentType)
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
	return nil
}

// quoteETag renders an etag as an HTTP entity tag ("..."), as Azure does in the ETag header.
func quoteETag(e string) string {
	if e == "" {
		return ""
	}
	return `"` + e + `"`
}

// etagValue strips the quotes (and a weak W/ prefix) of an If-Match value; "*" and "" stay as they
// are (both mean unconditional to the hub).
func etagValue(v string) string {
	v = strings.TrimSpace(v)
	v = strings.TrimPrefix(v, "W/")
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		v = v[1 : len(v)-1]
	}
	return v
}
