package lib

import "testing"

func TestClampInside(t *testing.T) {
	if got := Clamp(5, 0, 10); got != 5 {
		t.Fatalf("Clamp(5, 0, 10) = %d", got)
	}
}

func TestInc(t *testing.T) {
	if got := Inc(1); got != 2 {
		t.Fatalf("Inc(1) = %d", got)
	}
}
