package api_test

import (
	"bytes"
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

// Whatever body a sender posts, the send route answers 201 (stored: the message then validates
// and shows in the queue) or a 4xx JSON error naming what is wrong, never a 5xx or a panic.
func FuzzSendBody(f *testing.F) {
	h, err := hub.Open(context.Background(), f.TempDir(), hub.Config{HostName: hostName, MaxQueueDepth: 100000}.Defaults(), hub.Events{})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = h.Close() })
	if _, _, err := h.PutDevice(context.Background(), iothub.Device{DeviceID: "dev1"}, ""); err != nil {
		f.Fatal(err)
	}
	a := api.New(api.Options{Hub: h, HostName: hostName})
	p, _ := h.Policy("service")
	tok, err := iothub.NewSASToken(hostName, p.PrimaryKey, p.Name, time.Now().Add(24*time.Hour))
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte(`{"messageId":"m1","ack":"full","properties":[{"name":"target","value":"relay1"},{"name":"action","value":"on"}]}`))
	f.Add([]byte(`{"body":"aGVsbG8=","expiryTimeUtc":"2999-01-01T00:00:00Z","contentType":"text/plain"}`))
	f.Add([]byte(`{"properties":[{"name":"$.mid","value":"x"}],"ack":"sometimes"}`))
	f.Add([]byte(`{"messageId":"` + string(make([]byte, 200)) + `"}`))
	f.Add([]byte(`[1,2,3]`))
	f.Add([]byte(``))
	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest(http.MethodPost, "/devices/dev1/messages/devicebound", bytes.NewReader(body))
		req.Header.Set("Authorization", tok)
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		a.ServeHTTP(rec, req)
		switch {
		case rec.Code == http.StatusCreated:
			var res iothub.SendResult
			if err := json.Unmarshal(rec.Body.Bytes(), &res); err != nil || res.MessageID == "" || res.DeviceID != "dev1" {
				t.Fatalf("201 body %q: %v", rec.Body.String(), err)
			}
		case rec.Code >= 400 && rec.Code < 500:
			var er iothub.ErrorResponse
			if err := json.Unmarshal(rec.Body.Bytes(), &er); err != nil || er.ErrorCode == 0 || er.Detail == "" {
				t.Fatalf("%d body %q: %v", rec.Code, rec.Body.String(), err)
			}
		default:
			t.Fatalf("status %d for %q: %s", rec.Code, body, rec.Body.String())
		}
	})
}
