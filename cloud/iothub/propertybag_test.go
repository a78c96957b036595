package iothub

import (
	"reflect"
	"strings"
	"testing"
)

func TestPropertyBag(t *testing.T) {
	// The reference's escapes: $→%24 /→%2F :→%3A ;→%3B =→%3D space→%20, never '+'.
	bag := PropertyBag{
		{Name: "$.to", Value: "/devices/d/x"},
		{Name: "k:v", Value: "a;b=c d+e"},
		{Name: "null", Null: true},
		{Name: "empty", Value: ""},
		{Name: "utf8", Value: "é"},
	}
	enc := EncodePropertyBag(bag)
	want := "%24.to=%2Fdevices%2Fd%2Fx&k%3Av=a%3Bb%3Dc%20d%2Be&null&empty=&utf8=%C3%A9"
	if enc != want {
		t.Fatalf("encode\n got %s\nwant %s", enc, want)
	}
	dec, err := DecodePropertyBag(enc)
	if err != nil || !reflect.DeepEqual(dec, bag) {
		t.Fatalf("decode: %+v %v", dec, err)
	}
	if v, ok := dec.Get("null"); !ok || v != "" {
		t.Error("Get null")
	}
	if _, ok := dec.Get("absent"); ok {
		t.Error("Get absent")
	}
}

func TestDecodePropertyBagTolerance(t *testing.T) {
	cases := []struct {
		in   string
		want PropertyBag
	}{
		{"", nil},
		{"a=1&&b=2&", PropertyBag{{Name: "a", Value: "1"}, {Name: "b", Value: "2"}}},
		{"a=b=c", PropertyBag{{Name: "a", Value: "b=c"}}},
		{"a=x+y", PropertyBag{{Name: "a", Value: "x+y"}}},
		{"%24.mid=1&$.cid=2", PropertyBag{{Name: "$.mid", Value: "1"}, {Name: "$.cid", Value: "2"}}},
		{"a=%2f%2F", PropertyBag{{Name: "a", Value: "//"}}},
		{"a[]=b", PropertyBag{{Name: "a[]", Value: "b"}}},
		{"dup=1&dup=2", PropertyBag{{Name: "dup", Value: "1"}, {Name: "dup", Value: "2"}}},
	}
	for _, c := range cases {
		got, err := DecodePropertyBag(c.in)
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("DecodePropertyBag(%q) = %+v, %v", c.in, got, err)
		}
	}
	for _, c := range []struct{ in, mention string }{
		{"=v", "empty key at offset 0"},
		{"a=1&=v", "empty key at offset 4"},
		{"k%4=v", `key "k%4"`},
		{"key=%", `value of "key"`},
		{"key=ab%zz", `"%zz" at offset 2`},
	} {
		_, err := DecodePropertyBag(c.in)
		if err == nil || !strings.Contains(err.Error(), c.mention) {
			t.Errorf("DecodePropertyBag(%q) = %v, want mention of %q", c.in, err, c.mention)
		}
	}
}
