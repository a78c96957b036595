package twin

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"
	"unicode/utf8"
)

// Azure's twin limits.
const (
	MaxTagsBytes    = 8 * 1024
	MaxSectionBytes = 32 * 1024 // desired, reported
	MaxKeyBytes     = 1024
	MaxStringBytes  = 4 * 1024
	MaxDepth        = 10
	MaxSafeInteger  = 1 << 52
	lastUpdatedKey  = "$lastUpdated"
	lastVersionKey  = "$lastUpdatedVersion"
	metadataKey     = "$metadata"
	versionKey      = "$version"
	timeFormat      = "2006-01-02T15:04:05.0000000Z"
)

// ErrInvalid is wrapped by every validation failure.
var ErrInvalid = errors.New("invalid twin document")

// Error is a validation failure at a path ("properties.desired.outputs.relay1").
type Error struct {
	Path string
	Why  string
}

func (e *Error) Error() string {
	if e.Path == "" {
		return e.Why
	}
	return e.Path + ": " + e.Why
}

func (e *Error) Unwrap() error { return ErrInvalid }

// Object is a JSON object as decoded by Parse: values are string, bool, json.Number, Object, or
// nil (null: delete, in a patch).
type Object = map[string]any

// meta is $metadata for one node.
type meta struct {
	Updated  time.Time        `json:"u"`
	Version  int64            `json:"v"`
	Children map[string]*meta `json:"c,omitempty"`
}

// Section is desired or reported: properties, their version and metadata.
type Section struct {
	Props   Object `json:"props"`
	Version int64  `json:"version"`
	Meta    *meta  `json:"meta,omitempty"`
}

// Doc is one device's twin as stored.
type Doc struct {
	Tags     Object  `json:"tags"`
	Desired  Section `json:"desired"`
	Reported Section `json:"reported"`
	// Version counts every change to the twin (Azure's twin `version`); the etag derives from it.
	Version int64 `json:"version"`
}

// New is an empty twin: every section empty at version 1, as Azure creates them.
func New(now time.Time) *Doc {
	d := &Doc{Tags: Object{}, Version: 1}
	for _, s := range []*Section{&d.Desired, &d.Reported} {
		*s = Section{Props: Object{}, Version: 1, Meta: &meta{Updated: now.UTC(), Version: 1}}
	}
	return d
}

// ETag is the twin's etag, in Azure's look (base64 of a counter): it changes with every change.
func (d *Doc) ETag() string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(d.Version))
	return base64.StdEncoding.EncodeToString(b[:])
}

// Parse decodes a JSON object keeping numbers exact (json.Number). Arrays, duplicate-free checks
// and limits are Validate's job.
func Parse(data []byte) (Object, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, &Error{Why: "not JSON: " + err.Error()}
	}
	if dec.More() {
		return nil, &Error{Why: "data after the JSON value"}
	}
	o, ok := v.(Object)
	if !ok {
		return nil, &Error{Why: "want a JSON object"}
	}
	return o, nil
}

// Validate checks a patch (or a replacement) against Azure's key and value rules; path names its
// place ("properties.reported"). Root keys starting with '$' ($version, $metadata) are read-only
// and refused unless ignoreReadOnly, which drops them (SDKs may send back a twin they read).
func Validate(o Object, path string, ignoreReadOnly bool) error {
	if ignoreReadOnly {
		for k := range o {
			if strings.HasPrefix(k, "$") {
				delete(o, k)
			}
		}
	}
	return validateObject(o, path, 1)
}

func validateObject(o Object, path string, depth int) error {
	if depth > MaxDepth {
		return &Error{Path: path, Why: fmt.Sprintf("nested deeper than %d levels", MaxDepth)}
	}
	for k, v := range o {
		p := join(path, k)
		if err := validateKey(k); err != nil {
			return &Error{Path: p, Why: err.Error()}
		}
		switch x := v.(type) {
		case nil, bool:
		case string:
			if len(x) > MaxStringBytes {
				return &Error{Path: p, Why: fmt.Sprintf("string of %d bytes, longer than %d", len(x), MaxStringBytes)}
			}
		case json.Number:
			if err := validateNumber(x); err != nil {
				return &Error{Path: p, Why: err.Error()}
			}
		case Object:
			if err := validateObject(x, p, depth+1); err != nil {
				return err
			}
		case []any:
			return &Error{Path: p, Why: "arrays are not allowed in twins (use an object)"}
		default:
			return &Error{Path: p, Why: fmt.Sprintf("unsupported value %T", v)}
		}
	}
	return nil
}

func validateKey(k string) error {
	switch {
	case k == "":
		return errors.New("empty key")
	case len(k) > MaxKeyBytes:
		return fmt.Errorf("key of %d bytes, longer than %d", len(k), MaxKeyBytes)
	case !utf8.ValidString(k):
		return errors.New("key is not valid UTF-8")
	}
	for _, r := range k {
		if r < 0x20 || r == 0x7f || r == '.' || r == '$' || r == ' ' {
			return fmt.Errorf("key %q: %q is not allowed in a key (no control characters, '.', '$' or space)", k, r)
		}
	}
	return nil
}

var maxSafe = big.NewInt(MaxSafeInteger)

func validateNumber(n json.Number) error {
	s := n.String()
	if strings.ContainsAny(s, ".eE") {
		if _, err := n.Float64(); err != nil {
			return fmt.Errorf("number %s is out of range", s)
		}
		return nil
	}
	i, ok := new(big.Int).SetString(s, 10)
	if !ok {
		return fmt.Errorf("number %s is not a number", s)
	}
	if i.CmpAbs(maxSafe) > 0 {
		return fmt.Errorf("integer %s is outside ±2^52", s)
	}
	return nil
}

func join(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

// Merge applies a patch: keys set, objects merged, null deleting; the section's version goes up by
// one and every node the patch touched gets now as $lastUpdated. limit is the section's size cap.
// On error the section is unchanged.
func (s *Section) Merge(patch Object, now time.Time, path string, limit int) error {
	props := deepCopy(s.Props)
	m := s.Meta.clone()
	if m == nil {
		m = &meta{}
	}
	ver := s.Version + 1
	mergeInto(props, m, patch, now.UTC(), ver)
	if n := size(props); n > limit {
		return &Error{Path: path, Why: fmt.Sprintf("%d bytes after this update, more than Azure's %d", n, limit)}
	}
	s.Props, s.Meta, s.Version = props, m, ver
	return nil
}

// Replace sets the section to exactly o (nulls dropped), version up by one.
func (s *Section) Replace(o Object, now time.Time, path string, limit int) error {
	props, m := Object{}, &meta{}
	ver := s.Version + 1
	mergeInto(props, m, o, now.UTC(), ver)
	if n := size(props); n > limit {
		return &Error{Path: path, Why: fmt.Sprintf("%d bytes, more than Azure's %d", n, limit)}
	}
	s.Props, s.Meta, s.Version = props, m, ver
	return nil
}

func mergeInto(dst Object, m *meta, patch Object, now time.Time, ver int64) {
	m.Updated, m.Version = now, ver
	if m.Children == nil {
		m.Children = map[string]*meta{}
	}
	for k, v := range patch {
		switch x := v.(type) {
		case nil:
			delete(dst, k)
			delete(m.Children, k)
		case Object:
			sub, ok := dst[k].(Object)
			cm := m.Children[k]
			if !ok || cm == nil {
				sub, cm = Object{}, &meta{}
				dst[k], m.Children[k] = sub, cm
			}
			mergeInto(sub, cm, x, now, ver)
		default:
			dst[k] = v
			m.Children[k] = &meta{Updated: now, Version: ver}
		}
	}
}

// MergeTags merges a tags patch (no metadata, no version of their own).
func (d *Doc) MergeTags(patch Object) error {
	tags := deepCopy(d.Tags)
	mergeInto(tags, &meta{}, patch, time.Time{}, 0)
	if n := size(tags); n > MaxTagsBytes {
		return &Error{Path: "tags", Why: fmt.Sprintf("%d bytes after this update, more than Azure's %d", n, MaxTagsBytes)}
	}
	d.Tags = tags
	return nil
}

// ReplaceTags sets the tags to exactly o (nulls dropped).
func (d *Doc) ReplaceTags(o Object) error {
	tags := Object{}
	mergeInto(tags, &meta{}, o, time.Time{}, 0)
	if n := size(tags); n > MaxTagsBytes {
		return &Error{Path: "tags", Why: fmt.Sprintf("%d bytes, more than Azure's %d", n, MaxTagsBytes)}
	}
	d.Tags = tags
	return nil
}

func size(o Object) int {
	b, _ := json.Marshal(o)
	return len(b)
}

func deepCopy(o Object) Object {
	out := make(Object, len(o))
	for k, v := range o {
		if sub, ok := v.(Object); ok {
			out[k] = deepCopy(sub)
		} else {
			out[k] = v
		}
	}
	return out
}

func (m *meta) clone() *meta {
	if m == nil {
		return nil
	}
	c := &meta{Updated: m.Updated, Version: m.Version}
	if m.Children != nil {
		c.Children = make(map[string]*meta, len(m.Children))
		for k, v := range m.Children {
			c.Children[k] = v.clone()
		}
	}
	return c
}

// Render is a section as the service API shows it: the properties plus $metadata ($lastUpdated on
// every node; desired also $lastUpdatedVersion) and $version.
func (s *Section) Render(desired bool) Object {
	out := deepCopy(s.Props)
	out[metadataKey] = renderMeta(s.Meta, s.Props, desired)
	out[versionKey] = s.Version
	return out
}

func renderMeta(m *meta, props Object, desired bool) Object {
	out := Object{}
	if m == nil {
		return out
	}
	out[lastUpdatedKey] = m.Updated.UTC().Format(timeFormat)
	if desired {
		out[lastVersionKey] = m.Version
	}
	for k, v := range props {
		cm := m.Children[k]
		if sub, ok := v.(Object); ok {
			out[k] = renderMeta(cm, sub, desired)
			continue
		}
		leaf := Object{}
		if cm != nil {
			leaf[lastUpdatedKey] = cm.Updated.UTC().Format(timeFormat)
			if desired {
				leaf[lastVersionKey] = cm.Version
			}
		}
		out[k] = leaf
	}
	return out
}

// Plain is a section as a device sees it (MQTT GET, desired notifications): properties and
// $version, no metadata.
func (s *Section) Plain() Object {
	out := deepCopy(s.Props)
	out[versionKey] = s.Version
	return out
}
