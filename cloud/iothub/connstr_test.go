package iothub

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// Connection strings in the forms the Azure portal, az CLI and SDK samples print them.
func TestDeviceConnectionStringSDKForms(t *testing.T) {
	cases := []struct {
		in   string
		want DeviceConnectionString
	}{
		{"HostName=myhub.azure-devices.net;DeviceId=mydevice;SharedAccessKey=" + keyA,
			DeviceConnectionString{HostName: "myhub.azure-devices.net", DeviceID: "mydevice", SharedAccessKey: keyA}},
		{"HostName=myhub.azure-devices.net;DeviceId=mydevice;ModuleId=mymodule;SharedAccessKey=" + keyB,
			DeviceConnectionString{HostName: "myhub.azure-devices.net", DeviceID: "mydevice", ModuleID: "mymodule", SharedAccessKey: keyB}},
		{"HostName=myhub.azure-devices.net;DeviceId=leaf1;SharedAccessKey=" + keyA + ";GatewayHostName=edge.local",
			DeviceConnectionString{HostName: "myhub.azure-devices.net", DeviceID: "leaf1", SharedAccessKey: keyA, GatewayHostName: "edge.local"}},
		{"HostName=myhub.azure-devices.net;DeviceId=x509dev;x509=true",
			DeviceConnectionString{HostName: "myhub.azure-devices.net", DeviceID: "x509dev", X509: true}},
		{"HostName=myhub.azure-devices.net;DeviceId=device1;SharedAccessSignature=" + sasVectors[0].token,
			DeviceConnectionString{HostName: "myhub.azure-devices.net", DeviceID: "device1", SharedAccessSignature: sasVectors[0].token}},
	}
	for _, c := range cases {
		got, err := ParseDeviceConnectionString(c.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", c.in, err)
			continue
		}
		if got != c.want {
			t.Errorf("Parse(%q) = %+v", c.in, got)
		}
		if got.String() != c.in {
			t.Errorf("String() = %q, want %q", got.String(), c.in)
		}
	}
	// Keys in any order, a trailing ';' tolerated; String() restores SDK order.
	c, err := ParseDeviceConnectionString("SharedAccessKey=" + keyA + ";DeviceId=d;HostName=h;")
	if err != nil || c.String() != "HostName=h;DeviceId=d;SharedAccessKey="+keyA {
		t.Fatalf("%v %v", c, err)
	}
}

func TestDeviceConnectionStringErrors(t *testing.T) {
	base := "HostName=h;DeviceId=d;SharedAccessKey=" + keyA
	cases := []struct{ in, mention string }{
		{"", "empty"},
		{base + ";DeviceId=e", `duplicate key "DeviceId"`},
		{base + ";Foo=1", `unknown key "Foo"`},
		{"hostname=h;DeviceId=d;SharedAccessKey=" + keyA, `did you mean "HostName"`},
		{"DeviceId=d;SharedAccessKey=" + keyA, "missing HostName"},
		{"HostName=h;SharedAccessKey=" + keyA, "missing DeviceId"},
		{"HostName=h;DeviceId=d", "missing credential"},
		{"HostName=h;DeviceId=d;SharedAccessKey=not*base64", "SharedAccessKey: key is not valid base64"},
		{"HostName=h;DeviceId=d;SharedAccessKey=", "SharedAccessKey is empty"},
		{base + ";x509=true", "conflicting credentials"},
		{base + ";SharedAccessSignature=" + sasVectors[0].token, "conflicting credentials"},
		{"HostName=h;DeviceId=d;x509=yes", `x509 "yes"`},
		{"HostName=h;DeviceId=d;SharedAccessSignature=garbage", "SharedAccessSignature: malformed SAS token"},
		{"HostName=h;DeviceId=d d;SharedAccessKey=" + keyA, "DeviceId: invalid: device id"},
		{"HostName=h/x;DeviceId=d;SharedAccessKey=" + keyA, "HostName"},
		{"HostName=h;DeviceId=d;SharedAccessKey", "has no '='"},
	}
	for _, c := range cases {
		_, err := ParseDeviceConnectionString(c.in)
		if err == nil || !strings.Contains(err.Error(), c.mention) {
			t.Errorf("Parse(%q) = %v, want mention of %q", c.in, err, c.mention)
		}
	}
	// A malformed segment's content is redacted: it may be a key.
	for _, in := range []string{"HostName=h;DeviceId=d;" + keyA, "HostName=h;DeviceId=d;SharedAccessKey" + keyA, "HostName=h;DeviceId=d;" + strings.TrimSuffix(keyA, "=")} {
		_, err := ParseDeviceConnectionString(in)
		if err == nil || strings.Contains(err.Error(), keyA[8:20]) {
			t.Errorf("key leaked in %v", err)
		}
	}
}

func TestDeviceConnectionStringToken(t *testing.T) {
	c, err := ParseDeviceConnectionString("HostName=myhub.azure-devices.net;DeviceId=device1;SharedAccessKey=" + keyA)
	if err != nil {
		t.Fatal(err)
	}
	// now+ttl = 1764111600: the openssl vector.
	tok, err := c.Token(time.Unix(1764111600-3600, 0), time.Hour)
	if err != nil || tok != sasVectors[0].token {
		t.Fatalf("Token = %s, %v", tok, err)
	}
	m, _ := ParseDeviceConnectionString("HostName=myhub.azure-devices.net;DeviceId=dev-1;ModuleId=mod.a;SharedAccessKey=" + keyB)
	if tok, err := m.Token(time.Unix(1795647600-60, 0), time.Minute); err != nil || tok != sasVectors[2].token {
		t.Fatalf("module Token = %s, %v", tok, err)
	}
	s, _ := ParseDeviceConnectionString("HostName=myhub.azure-devices.net;DeviceId=device1;SharedAccessSignature=" + sasVectors[0].token)
	if tok, _ := s.Token(time.Now(), time.Hour); tok != sasVectors[0].token {
		t.Fatalf("given token: %s", tok)
	}
	x, _ := ParseDeviceConnectionString("HostName=h;DeviceId=d;x509=true")
	if tok, err := x.Token(time.Now(), time.Hour); tok != "" || err != nil {
		t.Fatalf("x509 token: %q %v", tok, err)
	}
	if _, err := c.Token(time.Now(), 0); err == nil {
		t.Fatal("zero ttl accepted")
	}
	g, _ := ParseDeviceConnectionString("HostName=h;DeviceId=d;SharedAccessKey=" + keyA + ";GatewayHostName=gw")
	if g.ConnectHost() != "gw" || c.ConnectHost() != "myhub.azure-devices.net" {
		t.Fatal("ConnectHost")
	}
}

func TestServiceConnectionString(t *testing.T) {
	in := "HostName=myhub.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=" + keyA
	c, err := ParseServiceConnectionString(in)
	if err != nil || c.String() != in || c.SharedAccessKeyName != "iothubowner" {
		t.Fatalf("%+v %v", c, err)
	}
	tok, err := c.Token(time.Unix(1764111600-3600, 0), time.Hour)
	if err != nil || tok != sasVectors[1].token {
		t.Fatalf("Token = %s, %v", tok, err)
	}
	for _, bad := range []struct{ in, mention string }{
		{"HostName=h;SharedAccessKey=" + keyA, "missing SharedAccessKeyName"},
		{"HostName=h;SharedAccessKeyName=p", "missing SharedAccessKey"},
		{"HostName=h;SharedAccessKeyName=p;SharedAccessKey=" + keyA + ";DeviceId=d", `unknown key "DeviceId"`},
		{"HostName=h;SharedAccessKeyName=p;SharedAccessKey=%%%", "SharedAccessKey: key is not valid base64"},
	} {
		_, err := ParseServiceConnectionString(bad.in)
		if !errors.Is(err, ErrConnectionString) || !strings.Contains(err.Error(), bad.mention) {
			t.Errorf("Parse(%q) = %v, want %q", bad.in, err, bad.mention)
		}
	}
}
