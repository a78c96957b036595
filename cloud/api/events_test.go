package api_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/api"
	"github.com/c2d-project/c2d/cloud/hub"
	"github.com/c2d-project/c2d/cloud/iothub"
)

// GET /messages/events: ServiceConnect, bad parameters are 400 with the parameter named, events
// come oldest first with where to continue, and a hub without an event log says so.
func TestEventsRoute(t *testing.T) {
	e := newEnv(t)
	if a := e.do(http.MethodGet, "/messages/events", "", nil, nil); a.code != http.StatusUnauthorized {
		t.Fatalf("no auth: %d %s", a.code, a.body)
	}
	if a := e.do(http.MethodGet, "/messages/events?after=0", e.token("service", time.Hour), nil, nil); a.code != http.StatusNotFound {
		t.Fatalf("without an event log: %d %s", a.code, a.body)
	}
	log := hub.NewEventLog(0, 0)
	srv := httptest.NewServer(api.New(api.Options{Hub: e.hub, HostName: hostName, Version: "v-test", Metrics: api.NewMetrics(), Events: log}))
	t.Cleanup(srv.Close)
	e.srv = srv
	log.Add("d1", iothub.PropertyBag{{Name: "$.ct", Value: "text/plain"}, {Name: "k", Value: "v"}}, []byte("one"))
	log.Add("d2", nil, []byte("two"))
	tok := e.token("service", time.Hour)
	for _, bad := range []string{"after=-5", "after=x", "limit=0", "limit=1001", "deviceId=a/b", "wait=soon"} {
		if a := e.do(http.MethodGet, "/messages/events?"+bad, tok, nil, nil); a.code != http.StatusBadRequest {
			t.Errorf("%s: %d %s", bad, a.code, a.body)
		}
	}
	if a := e.do(http.MethodGet, "/messages/events?after=0", e.token("registryRead", time.Hour), nil, nil); a.code != http.StatusUnauthorized {
		t.Errorf("registryRead: %d", a.code)
	}
	a := e.do(http.MethodGet, "/messages/events?after=0&limit=1", tok, nil, nil)
	var ans iothub.EventsAnswer
	if err := json.Unmarshal(a.body, &ans); err != nil || a.code != 200 || len(ans.Events) != 1 || ans.Next != 1 ||
		ans.Events[0].DeviceID != "d1" || ans.Events[0].ContentType != "text/plain" || string(ans.Events[0].Body) != "one" {
		t.Fatalf("first page: %d %s", a.code, a.body)
	}
	a = e.do(http.MethodGet, "/messages/events?after=1&deviceId=d2", tok, nil, nil)
	if err := json.Unmarshal(a.body, &ans); err != nil || len(ans.Events) != 1 || string(ans.Events[0].Body) != "two" || ans.Next != 2 {
		t.Fatalf("second page: %d %s", a.code, a.body)
	}
	// Nothing new: a short wait answers an empty page, not an error.
	a = e.do(http.MethodGet, "/messages/events?after=2&wait=1", tok, nil, nil)
	if err := json.Unmarshal(a.body, &ans); err != nil || a.code != 200 || len(ans.Events) != 0 || ans.Next != 2 {
		t.Fatalf("empty page: %d %s", a.code, a.body)
	}
}
