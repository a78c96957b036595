package iothub

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// Vectors computed outside Go, in a shell, with:
//
//	printf '%s\n%s' "$SR" "$SE" | openssl dgst -sha256 -mac HMAC -macopt hexkey:$KEYHEX -binary | base64
//
// then '+' '/' '=' of the base64 replaced by %2B %2F %3D by hand. keyA is bytes 0x00..0x1f
// (hexkey 000102…1f); keyB came from `openssl rand -base64 32` (hexkey e0b669…c5e78d).
const (
	keyA = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
	keyB = "4LZpM+qAHUu1ZH/ObcP9WxC0OR6koz8v8vbombvF540="
)

var sasVectors = []struct {
	name               string
	resource, key, skn string
	se                 int64
	token              string
}{
	{"device", "myhub.azure-devices.net/devices/device1", keyA, "", 1764111600,
		"SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fdevice1&sig=LkMPjHoQCcR0Z9JYJMZtsY3qBkB1XQ%2BYT0uGIcD6uWw%3D&se=1764111600"},
	{"policy", "myhub.azure-devices.net", keyA, "iothubowner", 1764111600,
		"SharedAccessSignature sr=myhub.azure-devices.net&sig=yWSEoHigXNnRaxAy5CmnUir2x%2B5ep0SMxkJ%2Bfn2qgHE%3D&se=1764111600&skn=iothubowner"},
	{"module", "myhub.azure-devices.net/devices/dev-1/modules/mod.a", keyB, "", 1795647600,
		"SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fdev-1%2Fmodules%2Fmod.a&sig=wbfeIhURHRpOoNMg8AscvUf0RNSona6pAPTO%2FqG2zao%3D&se=1795647600"},
	{"self-hosted", "c2d.example.org/devices/pi-kitchen", keyB, "", 2000000000,
		"SharedAccessSignature sr=c2d.example.org%2Fdevices%2Fpi-kitchen&sig=sOP9nTkucnnNglVLVBarnHWpbjky7Ti2SmJKYNd5HHo%3D&se=2000000000"},
}

func TestNewSASTokenMatchesOpenSSL(t *testing.T) {
	for _, v := range sasVectors {
		t.Run(v.name, func(t *testing.T) {
			got, err := NewSASToken(v.resource, v.key, v.skn, time.Unix(v.se, 0))
			if err != nil {
				t.Fatal(err)
			}
			if got != v.token {
				t.Errorf("NewSASToken\n got %s\nwant %s", got, v.token)
			}
			tok, err := ParseSASToken(v.token)
			if err != nil {
				t.Fatal(err)
			}
			if tok.Resource != v.resource || tok.KeyName != v.skn || tok.Expiry.Unix() != v.se {
				t.Errorf("parsed %+v", tok)
			}
			if err := tok.Verify(v.key, v.resource, time.Unix(v.se-60, 0)); err != nil {
				t.Errorf("Verify: %v", err)
			}
			if tok.String() != v.token {
				t.Errorf("String() = %s", tok.String())
			}
		})
	}
}

// A token whose sr uses lower-case hex escapes (as .NET's HttpUtility emits) must verify over sr as
// transmitted. Signature computed with openssl over "myhub.azure-devices.net%2fdevices%2fdevice1\n1764111600".
func TestVerifyOverRawSR(t *testing.T) {
	const tokStr = "SharedAccessSignature sig=np1%2Fsf90kjB2Wd7OL6n3LEYbsq4ZHzPoHurgLjYAl5k%3D&se=1764111600&sr=myhub.azure-devices.net%2fdevices%2fdevice1"
	tok, err := ParseSASToken(tokStr)
	if err != nil {
		t.Fatal(err)
	}
	if tok.Resource != "myhub.azure-devices.net/devices/device1" {
		t.Fatalf("resource %q", tok.Resource)
	}
	if err := tok.Verify(keyA, "MyHub.Azure-Devices.NET/devices/device1", time.Unix(1764111000, 0)); err != nil {
		t.Fatal(err)
	}
}

// The old C SDK sent sr unencoded and signed the raw URI (MicrosoftDocs/azure-docs#11760). Signature
// computed with openssl over "myhub.azure-devices.net/devices/device1\n1764111600" with keyA.
func TestVerifyUnencodedSR(t *testing.T) {
	tok, err := ParseSASToken("SharedAccessSignature sr=myhub.azure-devices.net/devices/device1&sig=9E7%2Bmor1pGgGt8p2OShWX%2Br5Aaf9hsRfX5TDxFka3pQ%3D&se=1764111600")
	if err != nil {
		t.Fatal(err)
	}
	if err := tok.Verify(keyA, "myhub.azure-devices.net/devices/device1", time.Unix(1764111000, 0)); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyFailures(t *testing.T) {
	dev := sasVectors[0]
	pol := sasVectors[1]
	parse := func(s string) *SASToken {
		t.Helper()
		tok, err := ParseSASToken(s)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	before := time.Unix(dev.se-10, 0)
	cases := []struct {
		name   string
		tok    *SASToken
		key    string
		target string
		now    time.Time
		want   error
		detail []string
	}{
		{"wrong key", parse(dev.token), keyB, dev.resource, before, ErrTokenSignature, []string{"device key"}},
		{"wrong policy key", parse(pol.token), keyB, dev.resource, before, ErrTokenSignature, []string{`"iothubowner"`}},
		{"other device", parse(dev.token), keyA, "myhub.azure-devices.net/devices/device2", before, ErrTokenResource, []string{"device2"}},
		{"prefix is not a segment", parse(dev.token), keyA, "myhub.azure-devices.net/devices/device10", before, ErrTokenResource, nil},
		{"other hub", parse(pol.token), keyA, "otherhub.azure-devices.net/devices/device1", before, ErrTokenResource, nil},
		{"expired just now", parse(dev.token), keyA, dev.resource, time.Unix(dev.se+90, 0), ErrTokenExpired, []string{"1m30s ago", "clock"}},
		{"expired at se exactly", parse(dev.token), keyA, dev.resource, time.Unix(dev.se, 0), ErrTokenExpired, []string{"0s ago"}},
		{"expired long ago", parse(dev.token), keyA, dev.resource, time.Unix(dev.se+3*86400*365, 0), ErrTokenExpired, []string{"implausibly"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.tok.Verify(c.key, c.target, c.now)
			if !errors.Is(err, c.want) {
				t.Fatalf("Verify = %v, want %v", err, c.want)
			}
			for _, d := range c.detail {
				if !strings.Contains(err.Error(), d) {
					t.Errorf("error %q does not mention %q", err, d)
				}
			}
		})
	}
	// Policy token covers every device of the hub, module targets included.
	if err := parse(pol.token).Verify(keyA, "myhub.azure-devices.net/devices/x/modules/y", before); err != nil {
		t.Errorf("policy token over a module: %v", err)
	}
	// An expiry 10 minutes ago is neither skew-range nor implausible: no clock hint.
	err := parse(dev.token).Verify(keyA, dev.resource, time.Unix(dev.se+600, 0))
	if !errors.Is(err, ErrTokenExpired) || strings.Contains(err.Error(), "clock") {
		t.Errorf("10 min: %v", err)
	}
}

func TestParseSASTokenMalformed(t *testing.T) {
	good := sasVectors[0].token
	fields := strings.TrimPrefix(good, "SharedAccessSignature ")
	cases := []struct{ in, mention string }{
		{"", "does not start"},
		{"sr=a&sig=b&se=1", "does not start"},
		{"SharedAccessSignaturesr=a", "no space"},
		{"SharedAccessSignature " + fields + "&se=1", `duplicate field "se"`},
		{"SharedAccessSignature " + strings.Replace(fields, "&se=1764111600", "", 1), `missing field "se"`},
		{"SharedAccessSignature " + fields + "&foo=bar", `unknown field "foo"`},
		{"SharedAccessSignature " + fields + "&skn", `"skn" has no '='`},
		{"SharedAccessSignature " + fields + "&skn=", `field "skn" is empty`},
		{"SharedAccessSignature " + strings.Replace(fields, "se=1764111600", "se=soon", 1), "se"},
		{"SharedAccessSignature " + strings.Replace(fields, "se=1764111600", "se=-5", 1), "se"},
		{"SharedAccessSignature " + strings.Replace(fields, "sig=", "sig=AAAA", 1), "sig"},
		{"SharedAccessSignature sr=%zz&sig=LkMPjHoQCcR0Z9JYJMZtsY3qBkB1XQ%2BYT0uGIcD6uWw%3D&se=1", "sr"},
	}
	for _, c := range cases {
		_, err := ParseSASToken(c.in)
		if !errors.Is(err, ErrTokenMalformed) {
			t.Errorf("ParseSASToken(%q) = %v, want ErrTokenMalformed", c.in, err)
			continue
		}
		if !strings.Contains(err.Error(), c.mention) {
			t.Errorf("ParseSASToken(%q) = %q, want mention of %q", c.in, err, c.mention)
		}
	}
}

func TestResourceCovers(t *testing.T) {
	cases := []struct {
		r, target string
		want      bool
	}{
		{"h/a/b", "h/a/b", true},
		{"h/a/b", "h/a/b/c", true},
		{"h/a/b", "h/a/bc", false},
		{"h/a/b/", "h/a/b/c", true},
		{"H", "h/devices/x", true},
		{"https://h/devices/x", "h/devices/x", true},
		{"h/devices/x", "h/devices", false},
		{"h/devices/Pi-1", "H/DEVICES/pi-1", true},
		{"h/devices/n%40m.et%23st", "h/devices/n@m.et#st", true},
		{"h/devices/n@m.et#st", "h/devices/n@m.et#st", true},
		{"h/devices/a%2541", "h/devices/a%41", true},
		{"h/devices/a%41", "h/devices/aA", true},
		{"h/devices/aA", "h/devices/a%41", false},
		{"h%2Fdevices", "h/devices", false},
		{"", "h", false},
	}
	for _, c := range cases {
		if got := ResourceCovers(c.r, c.target); got != c.want {
			t.Errorf("ResourceCovers(%q, %q) = %v", c.r, c.target, got)
		}
	}
}

// A device id with special characters: the token's resource carries the id percent-encoded (so sr
// is double-encoded), as the C# SDK builds it, and verifies against the raw-id target.
func TestSpecialDeviceIDToken(t *testing.T) {
	c := DeviceConnectionString{HostName: "h", DeviceID: "n@m.et#st", SharedAccessKey: keyA}
	s, err := c.Token(time.Unix(1e9, 0), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(s, "sr=h%2Fdevices%2Fn%2540m.et%2523st&") {
		t.Fatalf("token %s", s)
	}
	tok, err := ParseSASToken(s)
	if err != nil {
		t.Fatal(err)
	}
	if err := tok.Verify(keyA, DeviceResource("h", "n@m.et#st", ""), time.Unix(1e9, 0)); err != nil {
		t.Fatal(err)
	}
}

func TestNewSASTokenErrors(t *testing.T) {
	if _, err := NewSASToken("h", "not base64!", "", time.Unix(2e9, 0)); err == nil || !strings.Contains(err.Error(), "base64") {
		t.Errorf("bad key: %v", err)
	}
	if _, err := NewSASToken("", keyA, "", time.Unix(2e9, 0)); err == nil {
		t.Error("empty resource accepted")
	}
	if _, err := NewSASToken("h", keyA, "", time.Time{}); err == nil {
		t.Error("zero expiry accepted")
	}
}
