package iothub

import (
	"errors"
	"testing"
)

// The expectations in this file are stated from Azure's documented forms, not from the code.

// Device, module and message ids and property names take the ASCII letters and digits, the ends of
// each range included, and not the bytes just outside them (Azure's device identity rules).
func TestIDCharacterRangesIncludeTheirEnds(t *testing.T) {
	for _, c := range "AZaz09" {
		id := "x" + string(c) + "x"
		if err := ValidateDeviceID(id); err != nil {
			t.Errorf("device id %q: %v", id, err)
		}
		if err := ValidateModuleID(id); err != nil {
			t.Errorf("module id %q: %v", id, err)
		}
		if err := ValidateMessageID(id); err != nil {
			t.Errorf("message id %q: %v", id, err)
		}
		if err := ValidatePropertyName(id); err != nil {
			t.Errorf("property name %q: %v", id, err)
		}
	}
	// Just outside each range: '/' and ':' around the digits, '[' after 'Z', '{' after 'z' — none
	// in the device id's list of other characters ('@' before 'A' and '`' before 'a' are neither
	// letters nor, for device ids, allowed punctuation except '@').
	for _, c := range "/:[{`" {
		id := "x" + string(c) + "x"
		if err := ValidateDeviceID(id); !errors.Is(err, ErrInvalid) {
			t.Errorf("device id %q: %v, want ErrInvalid", id, err)
		}
	}
}

// A direct method's status is any integer the device chose, up to 10 characters: a 10-digit
// status is passed through, an 11-digit one is refused.
func TestMethodResponseStatusOfTenDigits(t *testing.T) {
	for topic, want := range map[string]int{
		"$iothub/methods/res/1234567890/?$rid=1": 1234567890,
		"$iothub/methods/res/-123456789/?$rid=1": -123456789,
	} {
		st, rid, err := ParseMethodResponseTopic(topic)
		if err != nil || st != want || rid != "1" {
			t.Errorf("%s: status %d rid %q err %v, want %d", topic, st, rid, err, want)
		}
	}
	if _, _, err := ParseMethodResponseTopic("$iothub/methods/res/12345678901/?$rid=1"); !errors.Is(err, ErrTopic) {
		t.Errorf("an 11-digit status: %v, want ErrTopic", err)
	}
}

// The old username form without '?' (`{host}/{deviceId}/api-version=...`): with three levels the
// last is the parameters, whether it starts with api-version or with DeviceClientType, and never
// a module id — even when, without '&', it would be a valid one.
func TestUsernameOldFormWithThreeLevels(t *testing.T) {
	for in, want := range map[string][2]string{
		"hub/dev1/api-version=2018-06-30":           {ParamAPIVersion, "2018-06-30"},
		"hub/dev1/DeviceClientType=iothubclient":    {ParamDeviceClientType, "iothubclient"},
		"hub/dev1/DeviceClientType=x&api-version=1": {ParamAPIVersion, "1"},
	} {
		u, err := ParseUsername(in)
		if err != nil {
			t.Errorf("%s: %v", in, err)
			continue
		}
		if u.HostName != "hub" || u.DeviceID != "dev1" || u.ModuleID != "" || u.Params.Get(want[0]) != want[1] {
			t.Errorf("%s: %+v, want device dev1, no module, %s=%s", in, u, want[0], want[1])
		}
	}
}

// Only a third level can carry the old form's parameters: with two, the second is the device id,
// whatever it looks like (device ids may contain '=').
func TestUsernameOfTwoLevelsIsHostAndDeviceEvenIfTheIDLooksLikeAParameter(t *testing.T) {
	for _, id := range []string{"api-version=2018-06-30", "DeviceClientType=x"} {
		u, err := ParseUsername("hub/" + id)
		if err != nil {
			t.Errorf("hub/%s: %v", id, err)
			continue
		}
		if u.HostName != "hub" || u.DeviceID != id || len(u.Params) != 0 {
			t.Errorf("hub/%s: %+v, want device %q and no parameters", id, u, id)
		}
	}
}
