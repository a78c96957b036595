package twin

import (
	"bytes"
	"io"
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

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }
