package config

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// withLines appends "(line N)" to each of Validate's errors ("path: message"), N being the line of
// the YAML node at path, or of its nearest ancestor in the document when the field is absent (a
// missing field is reported at the mapping that lacks it). Decoding errors carry their line
// already; these are found after decoding, when only the path is known.
func withLines(doc *yaml.Node, err error) error {
	var list []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		list = j.Unwrap()
	} else {
		list = []error{err}
	}
	out := make([]error, len(list))
	for i, e := range list {
		out[i] = e
		path, _, ok := strings.Cut(e.Error(), ": ")
		if !ok {
			continue
		}
		if line := lineOf(doc, path); line > 0 {
			out[i] = fmt.Errorf("%w (line %d)", e, line)
		}
	}
	return errors.Join(out...)
}

// lineOf finds the line of the node at a dotted path with [i] indices
// (commands.identify.steps[2].target). Keys may themselves contain '.', so at each mapping the
// longest key that matches the rest of the path wins.
func lineOf(doc *yaml.Node, path string) int {
	n := doc
	if n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
		n = n.Content[0]
	}
	line := n.Line
	rest := path
	for rest != "" {
		switch {
		case strings.HasPrefix(rest, "["):
			end := strings.IndexByte(rest, ']')
			idx, err := strconv.Atoi(rest[1:max(end, 1)])
			if end < 0 || err != nil || n.Kind != yaml.SequenceNode || idx < 0 || idx >= len(n.Content) {
				return line
			}
			n = n.Content[idx]
			rest = strings.TrimPrefix(rest[end+1:], ".")
		case n.Kind == yaml.MappingNode:
			var best *yaml.Node
			bestKey := ""
			for i := 0; i+1 < len(n.Content); i += 2 {
				k := n.Content[i].Value
				if len(k) > len(bestKey) && strings.HasPrefix(rest, k) &&
					(len(rest) == len(k) || rest[len(k)] == '.' || rest[len(k)] == '[') {
					best, bestKey = n.Content[i], k
					if i+1 < len(n.Content) {
						best = n.Content[i+1]
					}
					line = n.Content[i].Line
				}
			}
			if best == nil {
				return line
			}
			n = best
			rest = strings.TrimPrefix(rest[len(bestKey):], ".")
		default:
			return line
		}
		if n.Kind == yaml.AliasNode && n.Alias != nil {
			n = n.Alias
		}
		if n.Kind == yaml.SequenceNode || n.Kind == yaml.MappingNode {
			if rest != "" {
				line = n.Line
			}
		}
	}
	return line
}

// yamlSyntaxError makes yaml's syntax errors say what to do: a tab used for indentation ("found
// character that cannot start any token") is the common one, and YAML allows only spaces there.
func yamlSyntaxError(data []byte, err error) error {
	if strings.Contains(err.Error(), "cannot start any token") || strings.Contains(err.Error(), "found a tab") {
		for i, l := range strings.Split(string(data), "\n") {
			trimmed := strings.TrimLeft(l, " ")
			if strings.HasPrefix(trimmed, "\t") {
				return fmt.Errorf("line %d: indented with a tab; YAML indents with spaces only (replace the tab with spaces)", i+1)
			}
		}
	}
	return err
}
