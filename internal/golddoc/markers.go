package golddoc

import (
	"fmt"
	"regexp"
	"strings"
)

// Quote is one marked piece of a doc: a fenced block (Lines) or one table row's message (Lines
// has one element).
type Quote struct {
	File  string
	Line  int // 1-based line of the block's first line or of the row
	Name  string
	Table bool
	Lines []string
}

var (
	markerRE = regexp.MustCompile(`^<!-- golden(-table)?: ([a-z0-9-]+)(?: column=([1-9]))? -->\s*$`)
	tickRE   = regexp.MustCompile("`([^`]+)`")
)

// Parse finds every marked block and table row in a Markdown document.
func Parse(file, text string) ([]Quote, error) {
	lines := strings.Split(text, "\n")
	var out []Quote
	for i := 0; i < len(lines); i++ {
		m := markerRE.FindStringSubmatch(strings.TrimSpace(lines[i]))
		if m == nil {
			continue
		}
		table, name, col := m[1] != "", m[2], 1
		if m[3] != "" {
			col = int(m[3][0] - '0')
		}
		j := i + 1
		for j < len(lines) && strings.TrimSpace(lines[j]) == "" {
			j++
		}
		if j == len(lines) {
			return nil, fmt.Errorf("%s:%d: marker %q is followed by nothing", file, i+1, name)
		}
		if !table {
			open := strings.TrimSpace(lines[j])
			if !strings.HasPrefix(open, "```") {
				return nil, fmt.Errorf("%s:%d: marker %q must precede a fenced block", file, i+1, name)
			}
			indent := lines[j][:len(lines[j])-len(strings.TrimLeft(lines[j], " "))]
			var body []string
			k := j + 1
			for ; k < len(lines) && strings.TrimSpace(lines[k]) != "```"; k++ {
				body = append(body, strings.TrimPrefix(lines[k], indent))
			}
			if k == len(lines) {
				return nil, fmt.Errorf("%s:%d: block %q is not closed", file, j+1, name)
			}
			out = append(out, Quote{File: file, Line: j + 2, Name: name, Lines: body})
			i = k
			continue
		}
		if !strings.HasPrefix(strings.TrimSpace(lines[j]), "|") {
			return nil, fmt.Errorf("%s:%d: marker %q must precede a table", file, i+1, name)
		}
		k := j + 2 // header and separator
		for ; k < len(lines) && strings.HasPrefix(strings.TrimSpace(lines[k]), "|"); k++ {
			cells := strings.Split(strings.TrimSpace(lines[k]), "|")
			if col >= len(cells) {
				continue
			}
			for _, q := range tickRE.FindAllStringSubmatch(cells[col], -1) {
				out = append(out, Quote{File: file, Line: k + 1, Name: name, Table: true, Lines: []string{q[1]}})
			}
		}
		i = k
	}
	return out, nil
}

// Match reports whether line matches pattern, where "..." in pattern stands for any text.
func Match(pattern, line string) bool {
	parts := strings.Split(pattern, "...")
	if !strings.HasPrefix(line, parts[0]) {
		return false
	}
	rest := line[len(parts[0]):]
	if len(parts) == 1 {
		return rest == ""
	}
	for _, p := range parts[1 : len(parts)-1] {
		i := strings.Index(rest, p)
		if i < 0 {
			return false
		}
		rest = rest[i+len(p):]
	}
	return strings.HasSuffix(rest, parts[len(parts)-1])
}

// Contains reports whether some substring of text, within one line, matches pattern.
func Contains(text, pattern string) bool {
	for _, line := range strings.Split(text, "\n") {
		for i := 0; i <= len(line); i++ {
			if Match(pattern+"...", line[i:]) {
				return true
			}
		}
	}
	return false
}
