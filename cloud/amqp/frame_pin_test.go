package amqp

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

// rawFrame is a frame header (AMQP 1.0 §2.3.1: SIZE, DOFF, TYPE, channel) of the given size and
// data offset, followed by size-8 bytes: the extended header, then the body.
func rawFrame(size uint32, doff byte) []byte {
	b := make([]byte, 8, max(int(size), 8))
	binary.BigEndian.PutUint32(b, size)
	b[4], b[5] = doff, 0
	for i := 8; i < int(size); i++ {
		b = append(b, byte(i))
	}
	return b
}

// §2.3.1: SIZE counts the whole frame and is at least 8 (the header); DOFF counts 4-byte words and
// is at least 2, and the body starts at 4*DOFF, which must lie within the frame; a frame larger than
// the agreed max-frame-size is a framing error. Each limit is taken exactly and refused one past.
func TestReadFrameLimitsAreExact(t *testing.T) {
	for _, tc := range []struct {
		name    string
		frame   []byte
		max     uint32
		framing bool
		body    int // bytes of body when read
	}{
		{"size 8: an empty frame", rawFrame(8, 2), 512, false, 0},
		{"size 7: below the header", append(rawFrame(8, 2)[:3:3], 7, 2, 0, 0, 0), 512, true, 0},
		{"size exactly max-frame-size", rawFrame(512, 2), 512, false, 504},
		{"size max-frame-size + 1", rawFrame(513, 2), 512, true, 0},
		{"doff 2: body after the 8-byte header", rawFrame(20, 2), 512, false, 12},
		{"doff 1: inside the header", rawFrame(20, 1), 512, true, 0},
		{"doff 3: a 4-byte extended header", rawFrame(20, 3), 512, false, 8},
		{"doff 5: body starts at the frame's end", rawFrame(20, 5), 512, false, 0},
		{"doff 6: body starts past the frame's end", rawFrame(20, 6), 512, true, 0},
	} {
		_, body, err := readFrame(bufio.NewReader(bytes.NewReader(tc.frame)), tc.max)
		if tc.framing {
			if !errors.Is(err, errFraming) {
				t.Errorf("%s: %v, want a framing error", tc.name, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v, want it read", tc.name, err)
			continue
		}
		if len(body) != tc.body {
			t.Errorf("%s: body of %d bytes, want %d", tc.name, len(body), tc.body)
		}
		if tc.body > 0 && body[0] != byte(int(tc.frame[4])*4) {
			t.Errorf("%s: body starts with byte %d, want the frame's byte %d", tc.name, body[0], int(tc.frame[4])*4)
		}
	}
}
