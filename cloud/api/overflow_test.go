package api

import (
	"net/http/httptest"
	"strings"
	"testing"
)

// Issue #17: an overflowing wait is clamped like any long one, never "negative".
func TestParseWaitOverflow(t *testing.T) {
	for v, want := range map[string]string{
		"9223372036854775807": "1m0s", "99999999999999999999999": "1m0s", "30": "30s", "-1": "negative", "-99999999999999999999999": "not a duration",
	} {
		d, err := parseWait(httptest.NewRequest("GET", "/x?wait="+v, nil))
		got := d.String()
		if err != nil {
			got = err.Error()
		}
		if !strings.Contains(got, want) {
			t.Errorf("wait=%s: %s, want %s", v, got, want)
		}
	}
}
