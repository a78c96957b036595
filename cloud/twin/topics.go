package twin

import (
	"bytes"
	"io"
	"net/url"
	"strconv"
)

// MQTT twin topics (Azure).
const (
	ResponseFilter = "$iothub/twin/res/#"
	DesiredFilter  = "$iothub/twin/PATCH/properties/desired/#"
	GetPrefix      = "$iothub/twin/GET/"
	ReportedPrefix = "$iothub/twin/PATCH/properties/reported/"
)

// DesiredTopic is `$iothub/twin/PATCH/properties/desired/?$version={n}`.
func DesiredTopic(version int64) string {
	return "$iothub/twin/PATCH/properties/desired/?$version=" + strconv.FormatInt(version, 10)
}

// ResponseTopic is `$iothub/twin/res/{status}/?$rid={rid}` plus `&$version={n}` when version > 0.
func ResponseTopic(status int, rid string, version int64) string {
	t := "$iothub/twin/res/" + strconv.Itoa(status) + "/?$rid=" + url.QueryEscape(rid)
	if version > 0 {
		t += "&$version=" + strconv.FormatInt(version, 10)
	}
	return t
}

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }
