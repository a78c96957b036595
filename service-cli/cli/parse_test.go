package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/c2d-project/c2d/cloud/iothub"
)

func TestParseProps(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []iothub.AppProperty
		err  string
	}{
		{in: "", want: nil},
		{in: "a=1", want: []iothub.AppProperty{{Name: "a", Value: "1"}}},
		{in: "led=on;blink=3", want: []iothub.AppProperty{{Name: "led", Value: "on"}, {Name: "blink", Value: "3"}}},
		{in: "k=a=b;;e=;", want: []iothub.AppProperty{{Name: "k", Value: "a=b"}, {Name: "e", Value: ""}}},
		{in: " x =1", want: []iothub.AppProperty{{Name: "x", Value: "1"}}},
		{in: "novalue", err: `property "novalue" has no '='`},
		{in: "a=1;=2", err: `property "=2" has an empty name`},
	} {
		got, err := ParseProps(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseProps(%q) error = %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseProps(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

// --props and --prop share one list, so the command-line order survives across both flags.
func TestPropFlagsKeepCommandLineOrder(t *testing.T) {
	var props []iothub.AppProperty
	fs := pflag.NewFlagSet("send", pflag.ContinueOnError)
	fs.Var(propList{props: &props, multi: true}, "props", "")
	fs.Var(propList{props: &props}, "prop", "")
	if err := fs.Parse([]string{"--prop", "a=1", "--props", "b=2;c=3", "--prop", "d=x=y"}); err != nil {
		t.Fatal(err)
	}
	want := []iothub.AppProperty{{Name: "a", Value: "1"}, {Name: "b", Value: "2"}, {Name: "c", Value: "3"}, {Name: "d", Value: "x=y"}}
	if !reflect.DeepEqual(props, want) {
		t.Fatalf("props = %v, want %v", props, want)
	}
	if err := fs.Parse([]string{"--prop", "oops"}); err == nil || !strings.Contains(err.Error(), "has no '='") {
		t.Fatalf("--prop oops: err = %v", err)
	}
}

func TestParseExpiry(t *testing.T) {
	now := time.Date(2026, 11, 25, 22, 0, 0, 0, time.FixedZone("CET", 3600))
	for _, tc := range []struct {
		in   string
		want time.Time
		err  string
	}{
		{in: "90s", want: now.Add(90 * time.Second).UTC()},
		{in: "1h30m", want: now.Add(90 * time.Minute).UTC()},
		{in: "2026-11-26T08:00:00Z", want: time.Date(2026, 11, 26, 8, 0, 0, 0, time.UTC)},
		{in: "2026-11-26T09:00:00.5+01:00", want: time.Date(2026, 11, 26, 8, 0, 0, 5e8, time.UTC)},
		{in: "0s", err: "must be positive"},
		{in: "-5m", err: "must be positive"},
		{in: "2020-01-01T00:00:00Z", err: "is in the past"},
		{in: "tomorrow", err: "want a duration from now"},
		{in: "", err: "is empty"},
	} {
		got, err := ParseExpiry(tc.in, now)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseExpiry(%q) error = %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || !got.Equal(tc.want) || got.Location() != time.UTC {
			t.Errorf("ParseExpiry(%q) = %v, %v; want %v UTC", tc.in, got, err, tc.want)
		}
	}
}

func TestOutcomeExitCodes(t *testing.T) {
	want := map[iothub.FeedbackStatus]int{
		iothub.StatusSuccess: 0, iothub.StatusRejected: 3, iothub.StatusExpired: 4,
		iothub.StatusDeliveryCountExceeded: 5, iothub.StatusPurged: 6, "Bogus": 1,
	}
	for s, code := range want {
		if got := OutcomeExitCode(s); got != code {
			t.Errorf("OutcomeExitCode(%s) = %d, want %d", s, got, code)
		}
	}
	// Every documented code is distinct and named once.
	seen := map[int]string{}
	for _, e := range exitCodes {
		if prev, dup := seen[e.Code]; dup {
			t.Errorf("exit code %d is both %s and %s", e.Code, prev, e.Name)
		}
		seen[e.Code] = e.Name
	}
	for _, c := range []int{ExitOK, ExitError, ExitUsage, ExitRejected, ExitExpired, ExitDeliveryCountExceeded,
		ExitPurged, ExitTimeout, ExitUnauthorized, ExitNotFound, ExitUnreachable, ExitInterrupted} {
		if _, ok := seen[c]; !ok {
			t.Errorf("exit code %d is not in the documented table", c)
		}
	}
}

func TestClassify(t *testing.T) {
	s := subject{device: "pump-7", message: "m1", needs: needServiceConnect, policies: policiesWith[needServiceConnect], endpoint: "http://127.0.0.1:1", policy: "registryRead"}
	for _, tc := range []struct {
		err      error
		exit     int
		code     string
		contains []string
	}{
		{iothub.Errorf(iothub.CodeIotHubUnauthorizedAccess, "policy 'registryRead' lacks ServiceConnect"), ExitUnauthorized, "IotHubUnauthorizedAccess",
			[]string{"lacks ServiceConnect", "'service' or 'iothubowner'", "c2d-hub connection-string"}},
		{iothub.Errorf(iothub.CodeIotHubUnauthorizedAccess, "bad signature"), ExitUnauthorized, "IotHubUnauthorizedAccess",
			[]string{"bad signature", `policy "registryRead"`}},
		{iothub.Errorf(iothub.CodeDeviceNotFound, "no device"), ExitNotFound, "DeviceNotFound", []string{`"pump-7"`, "c2d device list"}},
		{iothub.Errorf(iothub.CodeDeviceMessageNotFound, "gone"), ExitNotFound, "DeviceMessageNotFound", []string{`"m1"`, "c2d queue show pump-7"}},
		{fmt.Errorf("apiclient: %w", iothub.Errorf(iothub.CodeDeviceMaximumQueueDepthExceeded, "50 messages")), ExitError, "DeviceMaximumQueueDepthExceeded",
			[]string{"queue is full", "c2d queue purge pump-7"}},
		{iothub.Errorf(iothub.CodeArgumentInvalid, "messageId bad"), ExitUsage, "ArgumentInvalid", []string{"messageId bad"}},
		{iothub.Errorf(iothub.CodeServerError, "disk"), ExitError, "ServerError", []string{"disk"}},
		{fmt.Errorf("apiclient: %w", &url.Error{Op: "Get", URL: "http://127.0.0.1:1/devices", Err: &net.OpError{Op: "dial", Err: errors.New("connection refused")}}),
			ExitUnreachable, "Unreachable", []string{"connection refused", "--endpoint", "C2D_ENDPOINT"}},
		{context.DeadlineExceeded, ExitUnreachable, "Unreachable", []string{"--timeout"}},
		{context.Canceled, ExitInterrupted, "Interrupted", nil},
		{usageErrorf("bad"), ExitUsage, "Usage", []string{"bad"}},
	} {
		ce := classify(tc.err, s)
		if ce.exit != tc.exit || ce.code != tc.code {
			t.Errorf("classify(%v) = exit %d code %q, want %d %q", tc.err, ce.exit, ce.code, tc.exit, tc.code)
		}
		for _, c := range tc.contains {
			if !strings.Contains(ce.msg, c) {
				t.Errorf("classify(%v) message %q lacks %q", tc.err, ce.msg, c)
			}
		}
	}
}

func TestOutputFromArgs(t *testing.T) {
	env := func(v string) func(string) string { return func(string) string { return v } }
	for _, tc := range []struct {
		args []string
		env  string
		want string
	}{
		{[]string{"send", "x", "-o", "json"}, "", "json"},
		{[]string{"-ojson", "send"}, "", "json"},
		{[]string{"--output=json"}, "", "json"},
		{[]string{"--output", "text"}, "json", "text"},
		{[]string{"send"}, "json", "json"},
		{[]string{"send", "--", "-o", "json"}, "", "text"},
		{[]string{"-o", "yaml"}, "", "text"},
	} {
		if got := outputFromArgs(tc.args, env(tc.env)); got != tc.want {
			t.Errorf("outputFromArgs(%q, env %q) = %q, want %q", tc.args, tc.env, got, tc.want)
		}
	}
}

func FuzzParseProps(f *testing.F) {
	f.Add("led=on;blink=3")
	f.Add("k=a=b;;e=;")
	f.Fuzz(func(t *testing.T, s string) {
		props, err := ParseProps(s)
		if err != nil {
			return
		}
		// Every parsed pair renders back to a segment of the input.
		for _, p := range props {
			if p.Name == "" || strings.Contains(p.Name, ";") || strings.Contains(p.Value, ";") {
				t.Fatalf("ParseProps(%q) gave %+v", s, p)
			}
		}
	})
}
