package config

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// scalar is implemented by config types parsed from one YAML scalar (durations, states, enums).
type scalar interface {
	setScalar(s string) error
}

// fieldError is a decoding failure at a config path.
type fieldError struct {
	Path string
	Line int
	Msg  string
}

func (e *fieldError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s: %s (line %d)", e.Path, e.Msg, e.Line)
	}
	return fmt.Sprintf("%s: %s", e.Path, e.Msg)
}

// decodeNode decodes n into v strictly: unknown keys, duplicate keys and wrongly typed values fail
// with the dotted path of the field. yaml.v3's own KnownFields only reports line numbers and does not
// propagate into custom unmarshalers, hence this small decoder for the shapes the config uses.
func decodeNode(path string, n *yaml.Node, v reflect.Value) error {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil // `key:` with no value keeps the default
	}
	if v.Type() == reflect.TypeFor[BrokerURLs]() && n.Kind == yaml.ScalarNode {
		if n.Value != "" {
			v.Set(reflect.ValueOf(BrokerURLs{n.Value})) // one URL: a list of one
		}
		return nil
	}
	if v.CanAddr() {
		if s, ok := v.Addr().Interface().(scalar); ok {
			if n.Kind != yaml.ScalarNode {
				return &fieldError{path, n.Line, "expected a single value"}
			}
			if err := s.setScalar(n.Value); err != nil {
				return &fieldError{path, n.Line, err.Error()}
			}
			return nil
		}
	}
	switch v.Kind() {
	case reflect.Pointer:
		nv := reflect.New(v.Type().Elem())
		if err := decodeNode(path, n, nv.Elem()); err != nil {
			return err
		}
		v.Set(nv)
		return nil
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return &fieldError{path, n.Line, "expected a mapping of keys"}
		}
		fields := map[string]int{}
		var names []string
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			tag := strings.Split(t.Field(i).Tag.Get("yaml"), ",")[0]
			if tag == "" || tag == "-" {
				continue
			}
			fields[tag] = i
			names = append(names, tag)
		}
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			p := join(path, k.Value)
			idx, ok := fields[k.Value]
			if !ok {
				return &fieldError{p, k.Line, fmt.Sprintf("unknown field (known: %s)", strings.Join(names, ", "))}
			}
			if seen[k.Value] {
				return &fieldError{p, k.Line, "given more than once"}
			}
			seen[k.Value] = true
			if err := decodeNode(p, val, v.Field(idx)); err != nil {
				return err
			}
		}
		return nil
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			return &fieldError{path, n.Line, "expected a mapping of names"}
		}
		if v.IsNil() {
			v.Set(reflect.MakeMap(v.Type()))
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			p := join(path, k.Value)
			key := reflect.ValueOf(k.Value)
			if v.MapIndex(key).IsValid() {
				return &fieldError{p, k.Line, "declared more than once"}
			}
			elem := reflect.New(v.Type().Elem()).Elem()
			if err := decodeNode(p, val, elem); err != nil {
				return err
			}
			v.SetMapIndex(key, elem)
		}
		return nil
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return &fieldError{path, n.Line, "expected a list"}
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			if err := decodeNode(fmt.Sprintf("%s[%d]", path, i), item, s.Index(i)); err != nil {
				return err
			}
		}
		v.Set(s)
		return nil
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			return &fieldError{path, n.Line, "expected a single value"}
		}
		v.SetString(n.Value)
		return nil
	case reflect.Int:
		if n.Kind != yaml.ScalarNode {
			return &fieldError{path, n.Line, "expected a whole number"}
		}
		i, err := strconv.Atoi(n.Value)
		if err != nil {
			return &fieldError{path, n.Line, fmt.Sprintf("%q is not a whole number", n.Value)}
		}
		v.SetInt(int64(i))
		return nil
	case reflect.Bool:
		if n.Kind != yaml.ScalarNode {
			return &fieldError{path, n.Line, "expected true or false"}
		}
		switch n.Value {
		case "true":
			v.SetBool(true)
		case "false":
			v.SetBool(false)
		default:
			return &fieldError{path, n.Line, fmt.Sprintf("%q is not true or false", n.Value)}
		}
		return nil
	}
	return &fieldError{path, n.Line, fmt.Sprintf("unsupported config type %s", v.Type())}
}

// mappingKeys returns the keys of the mapping at path (dotted, top-level names) in document order.
func mappingKeys(doc *yaml.Node, path ...string) []string {
	n := doc
	if n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
		n = n.Content[0]
	}
	for _, p := range path {
		if n.Kind != yaml.MappingNode {
			return nil
		}
		var next *yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == p {
				next = n.Content[i+1]
			}
		}
		if next == nil {
			return nil
		}
		n = next
	}
	if n.Kind != yaml.MappingNode {
		return nil
	}
	keys := make([]string, 0, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		keys = append(keys, n.Content[i].Value)
	}
	return keys
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}
