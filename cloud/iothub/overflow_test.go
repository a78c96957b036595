package iothub

import (
	"strings"
	"testing"
)

// Issue #17: an overflowing se is "too large", not "not a positive number".
func TestSASExpiryOverflowSaysTooLarge(t *testing.T) {
	_, err := ParseSASToken("SharedAccessSignature sr=h%2Fdevices%2Fd&sig=RmFrZVNpZ25hdHVyZUZha2VTaWduYXR1cmVGYWtlU2k%3D&se=99999999999999999999")
	if err == nil || !strings.Contains(err.Error(), "too large") {
		t.Fatalf("ParseSASToken: %v, want \"too large\"", err)
	}
}
