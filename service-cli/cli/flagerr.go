package cli

import (
	"fmt"
	"regexp"
	"strings"
)

// pflag reports a value it cannot parse as `invalid argument "10" for "--wait" flag: time: missing
// unit in duration "10"`: the flag's name last and Go's wording. flagError turns that into
// `--wait "10": a duration needs a unit, e.g. 10s, 5m or 1h`; other flag errors pass unchanged.
var invalidFlagArg = regexp.MustCompile(`^invalid argument "(.*)" for "(?:-\w, )?(--[\w-]+)" flag: (.*)$`)

func flagError(err error) string {
	m := invalidFlagArg.FindStringSubmatch(err.Error())
	if m == nil {
		return err.Error()
	}
	value, flag, why := m[1], m[2], m[3]
	switch {
	case strings.HasPrefix(why, "time: missing unit"):
		why = "a duration needs a unit, e.g. 10s, 5m or 1h"
	case strings.HasPrefix(why, "time: "):
		why = "not a duration; write it like 500ms, 10s, 5m or 1h"
	case strings.HasPrefix(why, "strconv.ParseBool"):
		why = "want true or false"
	case strings.HasPrefix(why, "strconv."):
		why = "not a number"
	}
	return fmt.Sprintf("%s %q: %s", flag, value, why)
}
