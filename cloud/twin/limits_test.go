package twin

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// jsonLen is the size Azure's limits count: the section's JSON, measured here independently of
// the package's own size().
func jsonLen(t *testing.T, o Object) int { t.Helper(); return len(js(t, o)) }

// Azure's limits are maxima: a value at the limit is accepted, one byte more is refused.
func TestLimitsAreInclusive(t *testing.T) {
	atString := Object{"s": strings.Repeat("x", MaxStringBytes)}
	if err := Validate(atString, "properties.desired", false); err != nil {
		t.Errorf("a string of exactly %d bytes: %v", MaxStringBytes, err)
	}
	atKey := Object{strings.Repeat("k", MaxKeyBytes): json.Number("1")}
	if err := Validate(atKey, "properties.desired", false); err != nil {
		t.Errorf("a key of exactly %d bytes: %v", MaxKeyBytes, err)
	}
	if err := Validate(Object{"": json.Number("1")}, "properties.desired", false); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "empty key") {
		t.Errorf("an empty key at the root: %v", err)
	}

	now := time.Date(2026, 12, 7, 23, 0, 0, 0, time.UTC)
	patch := Object{"a": strings.Repeat("x", 1000), "o": Object{"b": "y"}}
	n := jsonLen(t, patch)
	for _, op := range []struct {
		name string
		do   func(s *Section, limit int) error
	}{
		{"Merge", func(s *Section, limit int) error { return s.Merge(patch, now, "properties.reported", limit) }},
		{"Replace", func(s *Section, limit int) error { return s.Replace(patch, now, "properties.reported", limit) }},
	} {
		var s Section
		if err := op.do(&s, n); err != nil {
			t.Errorf("%s to exactly the limit (%d bytes): %v", op.name, n, err)
		}
		var s2 Section
		err := op.do(&s2, n-1)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), fmt.Sprint(n)) {
			t.Errorf("%s to one byte over the limit: %v", op.name, err)
		}
		if s2.Version != 0 || len(s2.Props) != 0 {
			t.Errorf("%s refused, yet the section changed: version %d, %v", op.name, s2.Version, s2.Props)
		}
	}

	// Tags: exactly MaxTagsBytes of JSON is accepted by both operations, one byte more refused.
	tags := Object{"a": strings.Repeat("x", 4000), "b": strings.Repeat("x", 4000), "c": ""}
	tags["c"] = strings.Repeat("x", MaxTagsBytes-jsonLen(t, tags))
	if got := jsonLen(t, tags); got != MaxTagsBytes {
		t.Fatalf("test set-up: tags of %d bytes, want %d", got, MaxTagsBytes)
	}
	over := Object{"a": tags["a"], "b": tags["b"], "c": tags["c"].(string) + "x"}
	for name, do := range map[string]func(d *Doc, o Object) error{
		"MergeTags":   (*Doc).MergeTags,
		"ReplaceTags": (*Doc).ReplaceTags,
	} {
		d := New(now)
		if err := do(d, tags); err != nil {
			t.Errorf("%s of exactly %d bytes: %v", name, MaxTagsBytes, err)
		}
		d = New(now)
		if err := do(d, over); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), fmt.Sprint(MaxTagsBytes+1)) {
			t.Errorf("%s of %d bytes: %v", name, MaxTagsBytes+1, err)
		}
		if len(d.Tags) != 0 {
			t.Errorf("%s refused, yet the tags changed: %v", name, d.Tags)
		}
	}
}

// A patch may turn a leaf into an object: the object replaces the value, with metadata of its own.
func TestLeafBecomesObject(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 23, 0, 0, 0, time.UTC)
	var s Section
	if err := s.Merge(Object{"a": json.Number("1"), "k": "v"}, t0, "properties.desired", MaxSectionBytes); err != nil {
		t.Fatal(err)
	}
	if err := s.Merge(Object{"a": Object{"b": json.Number("2")}}, t0.Add(time.Second), "properties.desired", MaxSectionBytes); err != nil {
		t.Fatal(err)
	}
	if got, want := js(t, s.Plain()), `{"$version":2,"a":{"b":2},"k":"v"}`; got != want {
		t.Errorf("Plain = %s, want %s", got, want)
	}
	meta := s.Render(true)[metadataKey].(Object)
	ab := meta["a"].(Object)["b"].(Object)
	if ab[lastUpdatedKey] != "2026-12-07T23:00:01.0000000Z" || ab[lastVersionKey] != int64(2) {
		t.Errorf("$metadata.a.b = %v, want updated at the second patch, version 2", ab)
	}
}

// Render gives every property its metadata, however many objects the section holds.
func TestRenderMetadataForEveryKey(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 23, 0, 0, 0, time.UTC)
	var s Section
	patch := Object{"leaf": "x"}
	for i := range 6 {
		patch[fmt.Sprintf("o%d", i)] = Object{"v": json.Number("1")}
	}
	if err := s.Merge(patch, t0, "properties.desired", MaxSectionBytes); err != nil {
		t.Fatal(err)
	}
	meta := s.Render(true)[metadataKey].(Object)
	for k := range patch {
		m, ok := meta[k].(Object)
		if !ok || m[lastUpdatedKey] != "2026-12-07T23:00:00.0000000Z" {
			t.Errorf("$metadata.%s = %v, want its $lastUpdated", k, meta[k])
		}
	}
}
