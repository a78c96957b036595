package cli

import (
	"fmt"
	"strings"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// propList collects application properties from --props and --prop into one slice, in command-line
// order: both flags share it, so `--prop a=1 --props 'b=2;c=3' --prop d=4` keeps a, b, c, d.
type propList struct {
	props *[]iothub.AppProperty
	multi bool // --props: ';'-separated list; --prop: one pair
}

func (p propList) String() string {
	if p.props == nil {
		return ""
	}
	parts := make([]string, len(*p.props))
	for i, a := range *p.props {
		parts[i] = a.Name + "=" + a.Value
	}
	return strings.Join(parts, ";")
}

func (p propList) Type() string {
	if p.multi {
		return "k=v;k2=v2"
	}
	return "k=v"
}

func (p propList) Set(s string) error {
	var got []iothub.AppProperty
	var err error
	if p.multi {
		got, err = ParseProps(s)
	} else {
		var a iothub.AppProperty
		a, err = parsePair(s)
		got = []iothub.AppProperty{a}
	}
	if err != nil {
		return err
	}
	*p.props = append(*p.props, got...)
	return nil
}

// ParseProps parses Azure CLI's property list `k=v;k2=v2`: pairs separated by ';', each split at its
// first '=' (so a value may contain '='), empty segments skipped, `k=` an empty value. A pair without
// '=' or with an empty name is an error naming it. Names and values are checked against Azure's
// character set later, with the rest of the message.
func ParseProps(s string) ([]iothub.AppProperty, error) {
	var out []iothub.AppProperty
	for _, seg := range strings.Split(s, ";") {
		if strings.TrimSpace(seg) == "" {
			continue
		}
		a, err := parsePair(seg)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

func parsePair(s string) (iothub.AppProperty, error) {
	k, v, ok := strings.Cut(s, "=")
	k = strings.TrimSpace(k)
	if !ok {
		return iothub.AppProperty{}, fmt.Errorf("property %q has no '=' (want name=value, e.g. led=on)", s)
	}
	if k == "" {
		return iothub.AppProperty{}, fmt.Errorf("property %q has an empty name (want name=value)", s)
	}
	return iothub.AppProperty{Name: k, Value: v}, nil
}

// ParseExpiry reads --expiry: a Go duration from now ("90s", "10m", "1h30m") or an absolute RFC 3339
// time ("2030-01-01T08:00:00Z"). The result is in UTC and must lie in the future. Examples in its
// errors are durations a default hub accepts (its TTL is 1m..48h) and a time two hours from now.
func ParseExpiry(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	example := now.Add(2 * time.Hour).UTC().Truncate(time.Minute).Format(time.RFC3339)
	if s == "" {
		return time.Time{}, fmt.Errorf("--expiry is empty: want a duration from now such as 10m or 2h, or a time such as %s", example)
	}
	if d, err := time.ParseDuration(s); err == nil {
		if d <= 0 {
			return time.Time{}, fmt.Errorf("--expiry %s: the duration must be positive, e.g. 10m", s)
		}
		return now.Add(d).UTC(), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("--expiry %q: want a duration from now (10m, 2h; a whole number needs a unit) or an RFC 3339 time (%s)", s, example)
	}
	if !t.After(now) {
		return time.Time{}, fmt.Errorf("--expiry %s is in the past (now is %s); for two hours from now: --expiry 2h or --expiry %s", s, now.UTC().Format(time.RFC3339), example)
	}
	return t.UTC(), nil
}

// parseOutput reads -o/--output.
func parseOutput(s string) (string, error) {
	switch strings.ToLower(s) {
	case "", "text", "table":
		return "text", nil
	case "json":
		return "json", nil
	}
	return "", fmt.Errorf("--output %q: want text or json", s)
}
