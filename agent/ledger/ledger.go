package ledger

import (
	"bytes"
	"container/list"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

// FileName is the log's name inside the agent's state directory.
const FileName = "executed-ids.log"

// Outcome is how a message was settled.
type Outcome string

const (
	Complete Outcome = "complete"
	Reject   Outcome = "reject"
)

// Entry is what the ledger remembers about one message id.
type Entry struct {
	ID          string
	Fingerprint string // identifies the message's content: a reused id with other content is a new message
	Started     time.Time
	Done        bool
	Outcome     Outcome
	Reason      string
	Finished    time.Time
}

// record is one line of the file.
type record struct {
	Op          string    `json:"op"` // start | done | forget
	ID          string    `json:"id"`
	Fingerprint string    `json:"fp,omitempty"`
	Outcome     Outcome   `json:"outcome,omitempty"`
	Reason      string    `json:"reason,omitempty"`
	Time        time.Time `json:"t"`
	Started     time.Time `json:"started,omitzero"` // done records written by compaction keep the start time
}

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// Ledger is safe for concurrent use.
type Ledger struct {
	path string
	max  int
	log  *slog.Logger

	mu      sync.Mutex
	f       *os.File
	entries map[string]*list.Element // id → element of order (value *Entry)
	order   *list.List               // least recently written first
	records int                      // lines in the file
	dirty   bool                     // a line was written since the last fsync began
	// The file is its records followed by zero bytes up to size (preallocated, see grow): end is
	// where the next record goes.
	end, size int64

	syncFile func(*os.File) error // datasync (fdatasync(2) on Linux); tests count and hold fsyncs

	syncOnce sync.Once
	syncKick chan struct{} // SyncSoon → syncer (cap 1: requests made during an fsync coalesce)
	syncStop chan struct{} // closed by Close
	syncDone chan struct{} // closed when the syncer returns
}

// Options configure Open.
type Options struct {
	MaxIDs int          // ids remembered; default 10000
	Logger *slog.Logger // warnings about dropped lines; nil discards
}

// Open loads (or creates) the log at path.
func Open(path string, opts Options) (*Ledger, error) {
	if opts.MaxIDs <= 0 {
		opts.MaxIDs = 10000
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	l := &Ledger{path: path, max: opts.MaxIDs, log: opts.Logger, entries: map[string]*list.Element{}, order: list.New(),
		syncFile: datasync, syncKick: make(chan struct{}, 1), syncStop: make(chan struct{}), syncDone: make(chan struct{})}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("executed-id log: %w", err)
	}
	data, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("executed-id log: %w", err)
	}
	// The preallocated tail is zeros; a record torn by power loss ends before them, without its
	// newline, and parse drops it.
	data = bytes.TrimRight(data, "\x00")
	recs, problems := parse(data)
	for _, p := range problems {
		l.log.Warn("executed-id log: dropping unreadable line", "path", path, "problem", p)
	}
	for _, r := range recs {
		l.apply(r)
	}
	l.records = len(recs)
	if len(problems) > 0 || l.records > 2*l.max {
		// Rewrite now: appending after a torn line would glue the next record onto it.
		if err := l.compactLocked(); err != nil {
			return nil, err
		}
		return l, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("executed-id log: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("executed-id log: %w", err)
	}
	l.f, l.end, l.size = f, int64(len(data)), st.Size()
	return l, nil
}

// growBy is how much zeroed space grow adds at a time: one fsync of the file's size and blocks
// per growBy of records (≈ 300 of them) instead of one per record.
const growBy = 64 << 10

// grow extends the file with zeros until n more bytes fit after end, and makes that durable
// (fsync: the new size and blocks). Records are then written into space the file already has,
// so each one's sync is fdatasync(2) of data alone: no journal commit for the file's size on
// every record (on the bench's ext4 disk a Start took 141–154 µs appended, 83–94 µs so; see
// BenchmarkStart) and, on a board, no metadata write to its SD card per message. Zeros are
// written, not fallocate(2)d: unwritten extents would need a metadata change when first written.
func (l *Ledger) grow(n int) error {
	if l.end+int64(n) <= l.size {
		return nil
	}
	newSize := l.end + int64(n) + growBy
	if _, err := l.f.WriteAt(make([]byte, newSize-l.size), l.size); err != nil {
		return fmt.Errorf("executed-id log: extend %s: %w", l.path, err)
	}
	if err := l.f.Sync(); err != nil {
		return fmt.Errorf("executed-id log: extend %s: fsync: %w", l.path, err)
	}
	l.size = newSize
	return nil
}

// Len is the number of ids remembered.
func (l *Ledger) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.entries)
}

// Lookup returns what the ledger knows about id.
func (l *Ledger) Lookup(id string) (Entry, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e, ok := l.entries[id]; ok {
		return *e.Value.(*Entry), true
	}
	return Entry{}, false
}

// Start records durably that executing id begins (call before the first pin moves).
func (l *Ledger) Start(id, fingerprint string, now time.Time) error {
	return l.write(record{Op: "start", ID: id, Fingerprint: fingerprint, Time: now.UTC()}, true)
}

// Finish records durably how id was settled (call before acknowledging it).
func (l *Ledger) Finish(id, fingerprint string, outcome Outcome, reason string, now time.Time) error {
	return l.write(record{Op: "done", ID: id, Fingerprint: fingerprint, Outcome: outcome, Reason: reason, Time: now.UTC()}, true)
}

// FinishWritten records how id was settled and returns once the line is written to the file,
// before it is fsynced: from then on it survives the agent being killed (the kernel holds it), and
// Sync (or SyncSoon) makes it survive power loss too. The agent sends the outcome while the fsync
// runs (see docs/agent.md, "When each record is durable").
func (l *Ledger) FinishWritten(id, fingerprint string, outcome Outcome, reason string, now time.Time) error {
	return l.write(record{Op: "done", ID: id, Fingerprint: fingerprint, Outcome: outcome, Reason: reason, Time: now.UTC()}, false)
}

// Sync makes every record written so far durable.
func (l *Ledger) Sync() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return errors.New("executed-id log: closed")
	}
	return l.syncLocked()
}

func (l *Ledger) syncLocked() error {
	if err := l.syncFile(l.f); err != nil {
		return fmt.Errorf("executed-id log: fsync %s: %w", l.path, err)
	}
	l.dirty = false
	return nil
}

// SyncSoon has the ledger's own goroutine make every record written so far durable, and returns at
// once: the caller (the job that just wrote its done record) goes on to send the outcome instead
// of waiting in fsync(2). Requests made while an fsync runs share the next one, so under load
// one fsync covers many done records. Close waits for it and syncs what is left.
func (l *Ledger) SyncSoon() {
	l.syncOnce.Do(func() { go l.syncer() })
	select {
	case l.syncKick <- struct{}{}:
	default:
	}
}

func (l *Ledger) syncer() {
	defer close(l.syncDone)
	for {
		select {
		case <-l.syncStop:
			return
		case <-l.syncKick:
		}
		// The fsync runs without the lock: the next message's Lookup and Start do not wait
		// for it. A line written meanwhile sets dirty again and its own SyncSoon follows.
		l.mu.Lock()
		f, dirty := l.f, l.dirty
		l.dirty = false
		l.mu.Unlock()
		if f == nil || !dirty {
			continue
		}
		if err := l.syncFile(f); err != nil && !errors.Is(err, os.ErrClosed) {
			// (ErrClosed: a compaction replaced the file, fsynced, under the lock meanwhile.)
			l.mu.Lock()
			l.dirty = true
			l.mu.Unlock()
			l.log.Error("executed-id log: a done record is written but could not be made durable; retried with the next record",
				"path", l.path, "err", err)
		}
	}
}

// Forget drops id, so a redelivery runs again (after an abandon).
func (l *Ledger) Forget(id string, now time.Time) error {
	return l.write(record{Op: "forget", ID: id, Time: now.UTC()}, true)
}

// Close stops the background sync, makes what was written durable and closes the file.
func (l *Ledger) Close() error {
	l.syncOnce.Do(func() { close(l.syncDone) }) // never started: nothing to wait for
	l.mu.Lock()
	select {
	case <-l.syncStop:
	default:
		close(l.syncStop)
	}
	l.mu.Unlock()
	<-l.syncDone
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	var err error
	if l.dirty {
		err = l.syncLocked()
	}
	if cerr := l.f.Close(); err == nil {
		err = cerr
	}
	l.f = nil
	return err
}

func (l *Ledger) write(r record, sync bool) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return errors.New("executed-id log: closed")
	}
	line, err := encode(r)
	if err != nil {
		return err
	}
	if err := l.grow(len(line)); err != nil {
		return err
	}
	if _, err := l.f.WriteAt(line, l.end); err != nil {
		return fmt.Errorf("executed-id log: write %s: %w", l.path, err)
	}
	l.end += int64(len(line))
	l.dirty = true
	if sync {
		if err := l.syncLocked(); err != nil {
			return err
		}
	}
	l.records++
	l.apply(r)
	if l.records > 2*l.max+100 {
		if err := l.compactLocked(); err != nil {
			l.log.Warn("executed-id log: compaction failed; still appending", "err", err)
		}
	}
	return nil
}

func (l *Ledger) apply(r record) {
	el, ok := l.entries[r.ID]
	switch r.Op {
	case "forget":
		if ok {
			l.order.Remove(el)
			delete(l.entries, r.ID)
		}
		return
	case "start":
		// A start always opens a fresh execution (a reused id with new content, or a re-run after
		// an abandon).
		e := &Entry{ID: r.ID, Fingerprint: r.Fingerprint, Started: r.Time}
		if ok {
			el.Value = e
			l.order.MoveToBack(el)
		} else {
			l.entries[r.ID] = l.order.PushBack(e)
		}
	case "done":
		var e *Entry
		if ok && el.Value.(*Entry).Fingerprint == r.Fingerprint {
			e = el.Value.(*Entry)
			l.order.MoveToBack(el)
		} else {
			e = &Entry{ID: r.ID, Fingerprint: r.Fingerprint, Started: r.Started}
			if ok {
				el.Value = e
				l.order.MoveToBack(el)
			} else {
				l.entries[r.ID] = l.order.PushBack(e)
			}
		}
		if !r.Started.IsZero() {
			e.Started = r.Started
		}
		e.Done, e.Outcome, e.Reason, e.Finished = true, r.Outcome, r.Reason, r.Time
	default:
		return
	}
	for len(l.entries) > l.max {
		front := l.order.Front()
		l.order.Remove(front)
		delete(l.entries, front.Value.(*Entry).ID)
	}
}

// compactLocked rewrites the file with one record per remembered id, atomically.
func (l *Ledger) compactLocked() error {
	var buf bytes.Buffer
	n := 0
	for el := l.order.Front(); el != nil; el = el.Next() {
		e := el.Value.(*Entry)
		r := record{Op: "start", ID: e.ID, Fingerprint: e.Fingerprint, Time: e.Started}
		if e.Done {
			r = record{Op: "done", ID: e.ID, Fingerprint: e.Fingerprint, Outcome: e.Outcome, Reason: e.Reason, Time: e.Finished, Started: e.Started}
		}
		line, err := encode(r)
		if err != nil {
			return err
		}
		buf.Write(line)
		n++
	}
	tmp := l.path + ".tmp"
	end := int64(buf.Len())
	buf.Write(make([]byte, growBy)) // the preallocated tail (grow)
	if err := writeSync(tmp, buf.Bytes()); err != nil {
		return fmt.Errorf("executed-id log: compact: %w", err)
	}
	if l.f != nil {
		_ = l.f.Close()
		l.f = nil
	}
	if err := os.Rename(tmp, l.path); err != nil {
		return fmt.Errorf("executed-id log: compact: %w", err)
	}
	if d, err := os.Open(filepath.Dir(l.path)); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	f, err := os.OpenFile(l.path, os.O_WRONLY, 0o640)
	if err != nil {
		return fmt.Errorf("executed-id log: %w", err)
	}
	l.f, l.end, l.size = f, end, int64(buf.Len())
	l.records = n
	l.dirty = false // the new file was fsynced before the rename
	return nil
}

func writeSync(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// encode renders one line: 8 hex digits of CRC-32C over the JSON, a space, the JSON, a newline.
func encode(r record) ([]byte, error) {
	js, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("executed-id log: %w", err)
	}
	line := make([]byte, 0, len(js)+10)
	line = fmt.Appendf(line, "%08x ", crc32.Checksum(js, crcTable))
	line = append(line, js...)
	return append(line, '\n'), nil
}

// parse reads every intact record and describes each line it had to drop.
func parse(data []byte) (recs []record, problems []string) {
	lineNo := 0
	for len(data) > 0 {
		lineNo++
		i := bytes.IndexByte(data, '\n')
		var line []byte
		if i < 0 {
			problems = append(problems, fmt.Sprintf("line %d: torn (no newline): %d bytes", lineNo, len(data)))
			break
		}
		line, data = data[:i], data[i+1:]
		r, err := decodeLine(line)
		if err != nil {
			problems = append(problems, fmt.Sprintf("line %d: %v", lineNo, err))
			continue
		}
		recs = append(recs, r)
	}
	return recs, problems
}

func decodeLine(line []byte) (record, error) {
	var r record
	if len(line) < 10 || line[8] != ' ' {
		return r, errors.New("too short or no checksum")
	}
	sum, err := strconv.ParseUint(string(line[:8]), 16, 32)
	if err != nil {
		return r, errors.New("bad checksum field")
	}
	js := line[9:]
	if crc32.Checksum(js, crcTable) != uint32(sum) {
		return r, errors.New("checksum mismatch")
	}
	if err := json.Unmarshal(js, &r); err != nil {
		return r, fmt.Errorf("bad record: %v", err)
	}
	switch r.Op {
	case "start", "done", "forget":
	default:
		return r, fmt.Errorf("unknown op %q", r.Op)
	}
	if r.ID == "" {
		return r, errors.New("record without id")
	}
	if r.Op == "done" && r.Outcome != Complete && r.Outcome != Reject {
		return r, fmt.Errorf("unknown outcome %q", r.Outcome)
	}
	return r, nil
}
