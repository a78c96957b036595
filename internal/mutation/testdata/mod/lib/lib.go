// Package lib is the mutated package of mutation's tests: its own test pins little, package
// user's tests pin more.
package lib

// Clamp returns v limited to [lo, hi].
func Clamp(v, lo, hi int) int {
	if v < lo {
		return lo
	}
	if v > hi {
		return hi
	}
	return v
}

// Sum adds 1 … n.
func Sum(n int) int {
	s := 0
	for i := 1; i <= n; i++ {
		s += i
	}
	return s
}

// Inc is pinned by lib's own test alone.
func Inc(v int) int { return v + 1 }

// Twice and Half are pinned by no test.
func Twice(v int) int { return v + v }

func Half(v int) int { return v / 2 }

// Kind names v.
func Kind(v int) string {
	k := "other"
	switch v {
	case 0:
		k = "zero"
		break
	}
	return k
}
