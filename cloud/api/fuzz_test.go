package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/api"
	"github.com/c2d-project/c2d/cloud/hub"
	"github.com/c2d-project/c2d/cloud/iothub"
)

// Whatever arrives in the Authorization header, the API answers 200 (a valid token) or a JSON
// 401 IotHubUnauthorizedAccess with a detail, never a 5xx or a panic.
func FuzzAuthorization(f *testing.F) {
	h, err := hub.Open(context.Background(), f.TempDir(), hub.Config{HostName: hostName}.Defaults(), hub.Events{})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = h.Close() })
	a := api.New(api.Options{Hub: h, HostName: hostName})
	p, _ := h.Policy("registryRead")
	good, err := iothub.NewSASToken(hostName, p.PrimaryKey, p.Name, time.Now().Add(24*time.Hour))
	if err != nil {
		f.Fatal(err)
	}
	goodTok, err := iothub.ParseSASToken(good)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add("SharedAccessSignature sr=hub.test&sig=abc&se=1&skn=iothubowner")
	f.Add("SharedAccessSignature skn=registryRead&se=99999999999&sr=hub.test%2Fdevices&sig=%ZZ")
	f.Fuzz(func(t *testing.T, auth string) {
		req := httptest.NewRequest(http.MethodGet, "/devices", nil)
		req.Header.Set("Authorization", auth)
		rec := httptest.NewRecorder()
		a.ServeHTTP(rec, req)
		switch rec.Code {
		case http.StatusOK:
			// Only the real signature can pass (a mutation may reorder or add fields).
			tok, err := iothub.ParseSASToken(auth)
			if err != nil || tok.Signature != goodTok.Signature || tok.KeyName != goodTok.KeyName {
				t.Fatalf("accepted %q", auth)
			}
		case http.StatusUnauthorized:
			var er iothub.ErrorResponse
			if err := json.Unmarshal(rec.Body.Bytes(), &er); err != nil || er.ErrorCode != iothub.CodeIotHubUnauthorizedAccess || er.Detail == "" {
				t.Fatalf("401 body %q: %v", rec.Body.String(), err)
			}
		default:
			t.Fatalf("status %d for %q: %s", rec.Code, auth, rec.Body.String())
		}
	})
}
