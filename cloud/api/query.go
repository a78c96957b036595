package api

import (
	"encoding/base64"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// queryRequest is Azure's POST /devices/query body.
type queryRequest struct {
	Query string `json:"query"`
}

// queryTwin is one result row of `SELECT * FROM devices`: Azure's twin JSON, with the fields c2d
// has (no tags or properties yet: empty objects).
type queryTwin struct {
	DeviceID                  string         `json:"deviceId"`
	ETag                      string         `json:"etag"`
	DeviceETag                string         `json:"deviceEtag"`
	Status                    string         `json:"status"`
	StatusReason              string         `json:"statusReason,omitempty"`
	ConnectionState           string         `json:"connectionState"`
	LastActivityTime          time.Time      `json:"lastActivityTime"`
	CloudToDeviceMessageCount int            `json:"cloudToDeviceMessageCount"`
	AuthenticationType        string         `json:"authenticationType"`
	Version                   int            `json:"version"`
	Tags                      map[string]any `json:"tags"`
	Properties                twinProps      `json:"properties"`
}

type twinProps struct {
	Desired  map[string]any `json:"desired"`
	Reported map[string]any `json:"reported"`
}

// selectAllDevices is the one query c2d answers (Registry.createQuery's usual form).
var selectAllDevices = regexp.MustCompile(`(?i)^\s*select\s+\*\s+from\s+devices\s*$`)

const defaultQueryPage = 100

// queryDevices answers POST /devices/query with SELECT * FROM devices, a page at a time: page size
// from x-ms-max-item-count, the next page's token in the x-ms-continuation response header (sent
// back as the request header), as Azure's SDKs page.
func (s *Server) queryDevices(w http.ResponseWriter, r *http.Request) error {
	var q queryRequest
	if err := decodeJSON(r, &q); err != nil {
		return err
	}
	if !selectAllDevices.MatchString(q.Query) {
		return badRequest("query %q: c2d-hub answers only SELECT * FROM devices", q.Query)
	}
	page := defaultQueryPage
	if v := r.Header.Get("x-ms-max-item-count"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return badRequest("x-ms-max-item-count: %q is not a positive integer", v)
		}
		page = min(n, 1000)
	}
	after := ""
	if v := r.Header.Get("x-ms-continuation"); v != "" {
		b, err := base64.RawURLEncoding.DecodeString(v)
		if err != nil {
			return badRequest("x-ms-continuation: %q is not a token this hub gave", v)
		}
		after = string(b)
	}
	devs, err := s.opt.Hub.ListDevices(r.Context())
	if err != nil {
		return err
	}
	sort.Slice(devs, func(i, j int) bool { return devs[i].DeviceID < devs[j].DeviceID })
	start := sort.Search(len(devs), func(i int) bool { return devs[i].DeviceID > after })
	devs = devs[start:]
	if len(devs) > page {
		w.Header().Set("x-ms-continuation", base64.RawURLEncoding.EncodeToString([]byte(devs[page-1].DeviceID)))
		devs = devs[:page]
	}
	out := make([]queryTwin, 0, len(devs))
	for _, d := range devs {
		out = append(out, twinOf(d))
	}
	w.Header().Set("x-ms-item-type", "Twin")
	return writeJSON(w, http.StatusOK, out)
}

func twinOf(d iothub.Device) queryTwin {
	state := d.ConnectionState
	if state == "" {
		state = "Disconnected"
	}
	return queryTwin{
		DeviceID: d.DeviceID, ETag: d.ETag, DeviceETag: d.ETag,
		Status: strings.ToLower(string(d.Status)), StatusReason: d.StatusReason,
		ConnectionState: state, LastActivityTime: d.LastActivityTime,
		CloudToDeviceMessageCount: d.CloudToDeviceMessageCount, AuthenticationType: "sas", Version: 1,
		Tags:       map[string]any{},
		Properties: twinProps{Desired: map[string]any{}, Reported: map[string]any{}},
	}
}
