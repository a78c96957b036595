package logtest

import (
	"log/slog"
	"testing"
)

func TestRecorderKeepsMessagesAttributesAndWith(t *testing.T) {
	r := &Recorder{}
	log := r.Logger()
	log.Debug("one", "n", 1)
	log.With("device", "pi-1").Warn("two", "err", "boom")
	log.Info("one", "n", 2)

	all := r.All()
	if len(all) != 3 || all[0]["msg"] != "one" || all[0]["level"] != slog.LevelDebug || all[0]["n"] != int64(1) {
		t.Fatalf("records %v", all)
	}
	if all[1]["device"] != "pi-1" || all[1]["err"] != "boom" || all[1]["level"] != slog.LevelWarn {
		t.Fatalf("record through With: %v", all[1])
	}
	if ones := r.With("one"); len(ones) != 2 || ones[1]["n"] != int64(2) {
		t.Fatalf("With(one) = %v", ones)
	}
	if none := r.With("three"); len(none) != 0 {
		t.Fatalf("With(three) = %v", none)
	}
}
