package server

import (
	"fmt"
	"reflect"
	"regexp"
	"strings"
)

// yaml.v3 words its errors for Go programmers ("line 8: field lock_timout not found in type
// server.Queue", "cannot unmarshal !!str `ten` into int"). yamlMessage says the same in the terms
// of hub.yaml: the key's path, the keys that exist there, and what kind of value is wanted.
var (
	reUnknownField = regexp.MustCompile(`^line (\d+): field (\S+) not found in type server\.(\w+)$`)
	reCannot       = regexp.MustCompile("^line (\\d+): cannot unmarshal !!(\\w+) `(.*)` into (\\S+)$")
	reNotToken     = regexp.MustCompile(`^yaml: line (\d+): found character that cannot start any token$`)
)

func yamlMessage(msg string) string {
	if m := reUnknownField.FindStringSubmatch(msg); m != nil {
		section, keys := configSection(m[3])
		key := m[2]
		if section != "" {
			key = section + "." + key
		}
		return fmt.Sprintf("line %s: %s: unknown key (keys here: %s; configs/hub.yaml documents them all)", m[1], key, strings.Join(keys, ", "))
	}
	if m := reCannot.FindStringSubmatch(msg); m != nil {
		want := m[4]
		switch {
		case strings.HasPrefix(want, "int"), strings.HasPrefix(want, "uint"):
			want = "a whole number"
		case want == "string":
			want = "a single value"
		case want == "bool":
			want = "true or false"
		case strings.HasPrefix(want, "server."):
			want = "a mapping of keys"
		}
		got := fmt.Sprintf("%q", m[3])
		if m[2] == "map" || m[2] == "seq" {
			got = map[string]string{"map": "a mapping", "seq": "a list"}[m[2]]
		}
		return fmt.Sprintf("line %s: %s is not %s", m[1], got, want)
	}
	if m := reNotToken.FindStringSubmatch(msg); m != nil {
		return fmt.Sprintf("line %s: a character YAML cannot start a value with; if the line is indented with a tab, indent with spaces only", m[1])
	}
	return msg
}

// configSection finds the hub.yaml section whose Go type is typeName: its key ("queue") and the
// keys it holds.
func configSection(typeName string) (string, []string) {
	t := reflect.TypeOf(Config{})
	if t.Name() == typeName {
		return "", yamlKeys(t)
	}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if f.Type.Name() == typeName {
			return strings.Split(f.Tag.Get("yaml"), ",")[0], yamlKeys(f.Type)
		}
	}
	return "", nil
}

func yamlKeys(t reflect.Type) []string {
	var keys []string
	for i := 0; i < t.NumField(); i++ {
		if k := strings.Split(t.Field(i).Tag.Get("yaml"), ",")[0]; k != "" && k != "-" {
			keys = append(keys, k)
		}
	}
	return keys
}
