package bench

import (
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/c2d-project/c2d/cloud/apiclient"
	"github.com/c2d-project/c2d/cloud/iothub"
	"github.com/c2d-project/c2d/hw/simhw"
)

// AzureS1SendsPerSec is Azure IoT Hub's cloud-to-device send throttle per S1 unit (1.67/s).
const AzureS1SendsPerSec = 1.67

// Config sizes a run; Defaults fit in a few minutes on 2 cores.
type Config struct {
	HubBin, AgentBin string
	Self             string // this binary (re-executed as the raw broker)
	WorkDir          string // data directories live here (its disk is the one whose fsync is measured)
	Sections         []string

	LatencyCommands    int  // commands per latency row
	SimBoardOnDisk     bool // the sim board's state file and transition log on the data disk, not tmpfs
	ManyDevices        int  // devices in the many-devices latency row
	ManyWorkers        int  // commands outstanding at once in that row
	RawRoundTrips      int  // request/reply round trips per baseline
	FsyncSamples       int
	ThroughputMessages int
	// ClusterMessages is the commands per cluster row: more than a throughput row's, because
	// these rows give a ratio between runs of a few seconds each, where a second's noise from the
	// machine's other work would otherwise decide it.
	ClusterMessages       int
	ThroughputSenders     int
	ThroughputDevices     []int
	RawThroughputMessages int
	FleetSizes            []int
	ConnectConcurrency    int
	IdleWindow            time.Duration
	// FleetIdle, when positive, holds the largest fleet idle that long after its row and measures
	// again: the first row is the hub just after the connect burst; the Go runtime halves grown
	// goroutine stacks at a GC (one is forced every 2 minutes) and returns freed pages only
	// gradually, and this row shows what that does to RSS.
	FleetIdle time.Duration
	// DistDir holds cross-built agents (dist/c2d-agent_linux_*); default: the module's dist/.
	DistDir string

	Log io.Writer
}

// Defaults returns the standard run (make bench).
func Defaults() Config {
	return Config{
		Sections:        []string{"fsync", "latency", "methods", "throughput", "cluster", "fleet", "agent"},
		LatencyCommands: 2000, ManyDevices: 100, ManyWorkers: 16, RawRoundTrips: 3000, FsyncSamples: 500,
		ThroughputMessages: 5000, ClusterMessages: 20000, ThroughputSenders: 32, ThroughputDevices: []int{1, 100, 1000},
		RawThroughputMessages: 20000, FleetSizes: []int{1000, 10000}, ConnectConcurrency: 64,
		IdleWindow: 10 * time.Second,
	}
}

// Report is the JSON the bench writes.
type Report struct {
	Machine    Machine         `json:"machine"`
	Started    time.Time       `json:"started"`
	Took       string          `json:"took"`
	Fsync      *Dist           `json:"fsync_4k,omitempty"`
	Latency    []LatencyRow    `json:"latency,omitempty"`
	Throughput []ThroughputRow `json:"throughput,omitempty"`
	Fleet      []FleetRow      `json:"fleet,omitempty"`
	Agent      *AgentFootprint `json:"agent,omitempty"`
	Methods    *MethodsReport  `json:"methods,omitempty"` // methods.go
	Cluster    *ClusterReport  `json:"cluster,omitempty"` // cluster.go
	// HubShutdownMS is how long a graceful stop (SIGTERM) of the hub took with the largest fleet
	// connected, until the process exited.
	HubShutdownMS      float64            `json:"hub_shutdown_with_fleet_ms,omitempty"`
	Ratios             map[string]float64 `json:"ratios,omitempty"`
	AzureS1SendsPerSec float64            `json:"azure_s1_sends_per_sec"`
	Notes              []string           `json:"notes,omitempty"`
}

// Machine is where the figures come from.
type Machine struct {
	NProc     int    `json:"nproc"`
	CPU       string `json:"cpu"`
	Kernel    string `json:"kernel"`
	Go        string `json:"go"`
	Disk      string `json:"disk"`
	MemTotal  string `json:"mem_total"`
	Hostname  string `json:"hostname"`
	GOOSARCH  string `json:"goos_goarch"`
	RLimitNoF uint64 `json:"rlimit_nofile"`
}

// LatencyRow is one latency measurement. Feedback is the headline: service API send → device
// → hardware → complete → feedback record received by the service.
type LatencyRow struct {
	Name     string `json:"name"`
	Devices  string `json:"devices"`
	Parallel int    `json:"parallel"`
	Feedback Dist   `json:"send_to_feedback"`
	Send     *Dist  `json:"send_201,omitempty"`
	// SettledTimeUTC is send → the message's settledTimeUtc as the hub reports it: taken when the
	// settle's transaction begins (before its commit), at Azure's millisecond resolution.
	SettledTimeUTC *Dist `json:"send_to_settled,omitempty"`
	// Durable is send → the hub's PUBACK of the device's disposition passing a DurableTap: the
	// outcome durable, timed exactly. Only rows whose device settles by disposition (c2d-agent).
	Durable *Dist `json:"send_to_durable,omitempty"`
	// Path splits Durable where the tap saw the packets (DevicePath).
	Path  *DevicePath `json:"durable_path,omitempty"`
	Extra int         `json:"duplicate_or_unknown_feedback,omitempty"`
	// Stages is the hub's own per-stage timing over the row's measured commands (stages.go),
	// keyed by stage: decode_auth, commit, deliver, settle, feedback.
	Stages map[string]StageStat `json:"hub_stages,omitempty"`
}

// DevicePath is where a tapped command's time went, by the instants its packets passed the tap:
// send → the delivery reaching the device (the API, the send's commit, the hand-over), the
// delivery → the device's disposition (the device: c2d-agent's executed-id log, the action, its
// MQTT client), the disposition → the hub's PUBACK of it (the settle's commit).
type DevicePath struct {
	ToDevice  Dist `json:"send_to_delivery"`
	InDevice  Dist `json:"delivery_to_disposition"`
	ToDurable Dist `json:"disposition_to_durable"`
}

// ThroughputRow is one throughput measurement.
type ThroughputRow struct {
	Name     string  `json:"name"`
	Devices  int     `json:"devices"`
	Messages int     `json:"messages"`
	Senders  int     `json:"senders"`
	PerSec   float64 `json:"per_sec"`
	SendsSec float64 `json:"sends_per_sec,omitempty"`
	Received int64   `json:"received,omitempty"`
}

// FleetRow is memory per idle connected device.
type FleetRow struct {
	Name          string  `json:"name"`
	Devices       int     `json:"devices"`
	RSSBefore     int64   `json:"rss_before_bytes"`
	RSSAfter      int64   `json:"rss_after_bytes"`
	PerDevice     float64 `json:"bytes_per_device"`
	ConnectPerSec float64 `json:"connects_per_sec"`
}

// AgentFootprint is c2d-agent's resource use.
type AgentFootprint struct {
	Binary        string           `json:"binary"`
	BinaryBytes   int64            `json:"binary_bytes"`
	Stripped      bool             `json:"stripped"`
	Dist          map[string]int64 `json:"dist,omitempty"`
	ReadyMS       float64          `json:"start_to_ready_ms"`
	RSSIdle       int64            `json:"rss_idle_bytes"`
	RSSLoad       int64            `json:"rss_after_load_bytes"`
	HWMLoad       int64            `json:"rss_peak_bytes"`
	IdleCPUPct    float64          `json:"idle_cpu_percent"`
	IdleWindowSec float64          `json:"idle_window_s"`
}

type runner struct {
	cfg  Config
	rep  *Report
	logw io.Writer
	seq  atomic.Int64
	// hubHTTP is the latency hub's API address: its /metrics has the per-stage timings.
	hubHTTP string
}

func (r *runner) logf(format string, args ...any) {
	fmt.Fprintf(r.logw, "%s  "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

func (r *runner) note(format string, args ...any) {
	r.rep.Notes = append(r.rep.Notes, fmt.Sprintf(format, args...))
	r.logf("note: "+format, args...)
}

func (r *runner) want(s string) bool {
	for _, x := range r.cfg.Sections {
		if x == s {
			return true
		}
	}
	return false
}

const benchHubConfig = `queue:
  max_queue_depth: 100000
  max_in_flight: 16
feedback:
  interval: 10ms
  batch_size: 64
log:
  level: warn
`

// Run runs the selected sections and returns the report.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	r := &runner{cfg: cfg, logw: cfg.Log, rep: &Report{Started: time.Now().UTC(), AzureS1SendsPerSec: AzureS1SendsPerSec, Ratios: map[string]float64{}}}
	nofile, err := RaiseFileLimit()
	if err != nil {
		r.note("could not raise RLIMIT_NOFILE: %v", err)
	}
	r.rep.Machine = machine(cfg.WorkDir)
	r.rep.Machine.RLimitNoF = nofile
	start := time.Now()
	steps := []struct {
		name string
		f    func(context.Context) error
	}{
		{"fsync", r.fsync}, {"latency", r.latency}, {"methods", r.methods}, {"throughput", r.throughput}, {"cluster", r.cluster}, {"fleet", r.fleet},
	}
	for _, s := range steps {
		if !r.want(s.name) && !(s.name == "latency" && r.want("agent")) {
			continue
		}
		r.logf("== %s", s.name)
		if err := s.f(ctx); err != nil {
			return r.rep, fmt.Errorf("%s: %w", s.name, err)
		}
	}
	r.ratios()
	r.rep.Took = time.Since(start).Round(time.Second).String()
	return r.rep, nil
}

func (r *runner) fsync(ctx context.Context) error {
	f, err := os.CreateTemp(r.cfg.WorkDir, "fsync-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := make([]byte, 4096)
	var ds []time.Duration
	for i := 0; i < r.cfg.FsyncSamples && ctx.Err() == nil; i++ {
		t := time.Now()
		if _, err := f.Write(buf); err != nil {
			return err
		}
		if err := f.Sync(); err != nil {
			return err
		}
		ds = append(ds, time.Since(t))
	}
	d := Summarise(ds)
	r.rep.Fsync = &d
	r.logf("fsync 4 KiB append: p50 %.3f ms p99 %.3f ms", d.P50, d.P99)
	return nil
}

// feedbackWaiter drains feedback batches and hands each record's arrival time to whoever waits
// for that message id.
type feedbackWaiter struct {
	mu      sync.Mutex
	waiting map[string]chan time.Time
	extra   int
}

func newFeedbackWaiter(ctx context.Context, c *apiclient.Client) *feedbackWaiter {
	w := &feedbackWaiter{waiting: map[string]chan time.Time{}}
	go func() {
		for ctx.Err() == nil {
			b, err := c.ReceiveFeedback(ctx, 5*time.Second)
			now := time.Now()
			if err != nil || b == nil {
				continue
			}
			w.mu.Lock()
			for _, rec := range b.Records {
				ch := w.waiting[rec.OriginalMessageID]
				delete(w.waiting, rec.OriginalMessageID)
				if ch == nil {
					w.extra++
					continue
				}
				ch <- now
			}
			w.mu.Unlock()
			_ = c.CompleteFeedback(ctx, b.LockToken)
		}
	}()
	return w
}

func (w *feedbackWaiter) expect(mid string) <-chan time.Time {
	ch := make(chan time.Time, 1)
	w.mu.Lock()
	w.waiting[mid] = ch
	w.mu.Unlock()
	return ch
}

func (w *feedbackWaiter) extras() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.extra
}

// latencyRun sends n commands (plus warm-up) round-robin to devices with `parallel` outstanding,
// each waiting for its feedback record.
// tap, when not nil, relays the devices' connections: the row's Durable column is read from it.
func (r *runner) latencyRun(ctx context.Context, c *apiclient.Client, fw *feedbackWaiter, tap *DurableTap, name string, devices []string, parallel, n int, props []iothub.AppProperty) (LatencyRow, error) {
	warm := n / 20
	if warm < 10 {
		warm = 10
	}
	total := n + warm
	type sample struct {
		dev, mid  string
		t0        time.Time
		send, fbk time.Duration
	}
	samples := make([]sample, total)
	one := func(i int) error {
		dev := devices[i%len(devices)]
		mid := fmt.Sprintf("%s-%d-%d", name, r.seq.Add(1), i)
		ch := fw.expect(mid)
		t0 := time.Now()
		if _, err := c.Send(ctx, dev, iothub.SendRequest{MessageID: mid, Ack: iothub.AckFull, Properties: props}); err != nil {
			return fmt.Errorf("send %s to %s: %w", mid, dev, err)
		}
		t1 := time.Now()
		select {
		case tf := <-ch:
			samples[i] = sample{dev: dev, mid: mid, t0: t0, send: t1.Sub(t0), fbk: tf.Sub(t0)}
		case <-time.After(60 * time.Second):
			return fmt.Errorf("no feedback for %s within 60s", mid)
		case <-ctx.Done():
			return ctx.Err()
		}
		return nil
	}
	if err := parallel2(ctx, warm, parallel, one); err != nil {
		return LatencyRow{}, err
	}
	// The hub's stage histograms around the measured commands only (not the warm-up).
	var before stageSnapshot
	if r.hubHTTP != "" {
		var err error
		if before, err = scrapeStages(ctx, r.hubHTTP); err != nil {
			return LatencyRow{}, err
		}
	}
	err := parallel2(ctx, n, parallel, func(i int) error { return one(warm + i) })
	if err != nil {
		return LatencyRow{}, err
	}
	var stages map[string]StageStat
	if before != nil {
		after, err := scrapeStages(ctx, r.hubHTTP)
		if err != nil {
			return LatencyRow{}, err
		}
		stages = after.since(before)
	}
	samples = samples[warm:]
	var send, fbk, settle, durable, toDev, inDev, toDurable []time.Duration
	var mu sync.Mutex
	for _, s := range samples {
		send = append(send, s.send)
		fbk = append(fbk, s.fbk)
		if tap == nil {
			continue
		}
		tt, ok, err := tap.Times(s.mid)
		if err != nil {
			return LatencyRow{}, err
		}
		if !ok {
			return LatencyRow{}, fmt.Errorf("%s: %s: the hub's PUBACK of its disposition never passed the tap (does the device settle by disposition?)", name, s.mid)
		}
		durable = append(durable, tt.Durable.Sub(s.t0))
		toDev = append(toDev, tt.Delivered.Sub(s.t0))
		inDev = append(inDev, tt.Disposed.Sub(tt.Delivered))
		toDurable = append(toDurable, tt.Durable.Sub(tt.Disposed))
	}
	err = parallel2(ctx, len(samples), 8, func(i int) error {
		st, err := c.MessageStatus(ctx, samples[i].dev, samples[i].mid, 0)
		if err != nil {
			return err
		}
		if st.Outcome != iothub.StatusSuccess {
			return fmt.Errorf("%s: outcome %q (%s), want Success", st.MessageID, st.Outcome, st.Reason)
		}
		if st.SettledTimeUTC != nil {
			mu.Lock()
			settle = append(settle, st.SettledTimeUTC.Sub(samples[i].t0))
			mu.Unlock()
		}
		return nil
	})
	if err != nil {
		return LatencyRow{}, err
	}
	sd, std := Summarise(send), Summarise(settle)
	row := LatencyRow{Name: name, Parallel: parallel, Feedback: Summarise(fbk), Send: &sd, SettledTimeUTC: &std, Extra: fw.extras(), Stages: stages}
	dur := ""
	if tap != nil {
		dd := Summarise(durable)
		row.Durable = &dd
		row.Path = &DevicePath{ToDevice: Summarise(toDev), InDevice: Summarise(inDev), ToDurable: Summarise(toDurable)}
		dur = fmt.Sprintf(", durable p50 %.2f = to device %.2f + in device %.2f + to durable %.2f (p50s)",
			dd.P50, row.Path.ToDevice.P50, row.Path.InDevice.P50, row.Path.ToDurable.P50)
	}
	r.logf("%s: send→feedback p50 %.2f p95 %.2f p99 %.2f ms (send 201 p50 %.2f, settledTimeUtc p50 %.2f%s)%s",
		name, row.Feedback.P50, row.Feedback.P95, row.Feedback.P99, sd.P50, std.P50, dur, stagesLine(stages))
	return row, nil
}

func parallel2(ctx context.Context, n, conc int, f func(int) error) error {
	if conc < 1 {
		conc = 1
	}
	return parallel(ctx, n, conc, f)
}

func ids(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%05d", prefix, i)
	}
	return out
}

func (r *runner) startHub(ctx context.Context, name string) (*HubProc, error) {
	dir := filepath.Join(r.cfg.WorkDir, name)
	_ = os.RemoveAll(dir)
	return StartHub(ctx, HubOptions{Bin: r.cfg.HubBin, DataDir: dir, Config: benchHubConfig})
}

func (r *runner) latency(ctx context.Context) error {
	hub, err := r.startHub(ctx, "hub-latency")
	if err != nil {
		return err
	}
	defer hub.Close()
	r.hubHTTP = hub.Endpoints.HTTP
	defer func() { r.hubHTTP = "" }()
	c := hub.Client()
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	fw := newFeedbackWaiter(fctx, c)
	key := NewKey()

	// 1. one real agent (process, sim hardware).
	if err := RegisterDevices(ctx, c, []string{"agent-0"}, key, 1); err != nil {
		return err
	}
	// The agent connects through a tap that times the hub's PUBACK of each disposition: the
	// instant its outcome is durable (DurableTap).
	tap, err := NewDurableTap(hub.Endpoints.MQTT)
	if err != nil {
		return err
	}
	defer tap.Close()
	setup := AgentSetup{Dir: filepath.Join(r.cfg.WorkDir, "agent-0"), MQTTAddr: tap.Addr(), DeviceID: "agent-0", Key: key}
	_ = os.RemoveAll(setup.Dir)
	if !r.cfg.SimBoardOnDisk {
		// The sim board's files stand in for GPIO registers: on the data disk their atomic
		// replace per transition was 40% of the agent's CPU (docs/benchmarks.md). The executed-id
		// log, the agent's own durable state, stays on the measured disk.
		if d, err := os.MkdirTemp("/dev/shm", "c2d-bench-board-*"); err == nil {
			setup.BoardDir = d
			defer os.RemoveAll(d)
		} else {
			r.note("sim board files on the data disk (no /dev/shm: %v)", err)
		}
	}
	ag, err := StartAgent(ctx, r.cfg.AgentBin, setup)
	if err != nil {
		return err
	}
	defer ag.Stop(10 * time.Second)
	fp := &AgentFootprint{ReadyMS: float64(ag.Ready.Microseconds()) / 1000}
	if r.want("agent") {
		if err := r.agentIdle(ag, fp); err != nil {
			return err
		}
	}
	if r.want("latency") || r.want("agent") {
		toggle := []iothub.AppProperty{{Name: "target", Value: "out1"}, {Name: "action", Value: "toggle"}}
		row, err := r.latencyRun(ctx, c, fw, tap, "c2d-agent", []string{"agent-0"}, 1, r.cfg.LatencyCommands, toggle)
		if err != nil {
			return err
		}
		row.Devices = "1 c2d-agent process (sim hardware, toggle, extension dispositions)"
		r.rep.Latency = append(r.rep.Latency, row)
		tr, err := countSets(setup.TransitionLog())
		if err == nil {
			want := r.cfg.LatencyCommands + max(10, r.cfg.LatencyCommands/20)
			if tr != want {
				r.note("agent transition log: %d set transitions for %d toggles", tr, want)
			}
		}
		fp.RSSLoad, fp.HWMLoad, _ = RSS(ag.PID())
	}
	if r.want("agent") {
		r.agentStatic(fp)
		r.rep.Agent = fp
	}
	if !r.want("latency") {
		return nil
	}

	// 2. lightweight devices: one (the hub alone), then many.
	for _, n := range []int{1, r.cfg.ManyDevices} {
		devs := ids(fmt.Sprintf("lat%d", n), n)
		if err := RegisterDevices(ctx, c, devs, key, 16); err != nil {
			return err
		}
		cl, err := DialDevices(ctx, hub.Endpoints.MQTT, devs, key, 16, nil)
		if err != nil {
			return err
		}
		par := 1
		if n > 1 {
			par = r.cfg.ManyWorkers
		}
		row, err := r.latencyRun(ctx, c, fw, nil, fmt.Sprintf("lite-%d", n), devs, par, r.cfg.LatencyCommands, nil)
		CloseAll(cl)
		if err != nil {
			return err
		}
		row.Devices = fmt.Sprintf("%d lightweight in-process device(s) (raw MQTT, PUBACK completes, no hardware)", n)
		r.rep.Latency = append(r.rep.Latency, row)
	}

	// 3. baselines: raw QoS 1 request/reply.
	rawP, rawAddr, err := StartRawBrokerProc(r.cfg.Self, filepath.Join(r.cfg.WorkDir, "raw-broker.log"))
	if err != nil {
		return err
	}
	row, err := r.requestReply(ctx, "raw-mochi", rawAddr, false)
	if err != nil {
		rawP.Stop(5 * time.Second)
		return err
	}
	r.rep.Latency = append(r.rep.Latency, row)
	row, err = r.requestReply(ctx, "raw-mochi-tapped", rawAddr, true)
	rawP.Stop(5 * time.Second)
	if err != nil {
		return err
	}
	r.rep.Latency = append(r.rep.Latency, row)
	mp, mAddr, err := StartMosquitto(filepath.Join(r.cfg.WorkDir))
	if errors.Is(err, ErrNoMosquitto) {
		r.note("mosquitto baseline skipped: %v", err)
		return nil
	} else if err != nil {
		return err
	}
	row, err = r.requestReply(ctx, "raw-mosquitto", mAddr, false)
	mp.Stop(5 * time.Second)
	if err != nil {
		return err
	}
	r.rep.Latency = append(r.rep.Latency, row)
	return nil
}

// requestReply measures a QoS 1 request → reply round trip between two clients through a broker.
// requestReply measures the raw QoS 1 round trip through the broker at addr; with tapped, the
// responder's connection goes through a DurableTap as c2d-agent's does, which prices the tap.
func (r *runner) requestReply(ctx context.Context, name, addr string, tapped bool) (LatencyRow, error) {
	rt := roundTrip{
		name: name, qos: 1, reqFilter: "rr/req", replyFilter: "rr/reply",
		reqTopic: func(int) string { return "rr/req" },
		payload:  []byte("target=out1&action=toggle"),
		reply:    func(_ string, p []byte) (string, []byte) { return "rr/reply", p },
	}
	devices := "2 lightweight clients, QoS 1 request → QoS 1 reply (the floor)"
	if tapped {
		tap, err := NewDurableTap(addr)
		if err != nil {
			return LatencyRow{}, err
		}
		defer tap.Close()
		rt.respAddr = tap.Addr()
		devices = "as raw-mochi, the responder through the bench's durable tap (the tap's cost)"
	}
	ds, err := rt.measure(ctx, addr, r.cfg.RawRoundTrips)
	if err != nil {
		return LatencyRow{}, err
	}
	row := LatencyRow{Name: name, Parallel: 1, Feedback: Summarise(ds), Devices: devices}
	r.logf("%s: round trip p50 %.3f p95 %.3f p99 %.3f ms", name, row.Feedback.P50, row.Feedback.P95, row.Feedback.P99)
	return row, nil
}

func (r *runner) agentIdle(ag *AgentProc, fp *AgentFootprint) error {
	c0, err := CPUTime(ag.PID())
	if err != nil {
		return err
	}
	t0 := time.Now()
	select {
	case <-time.After(r.cfg.IdleWindow): // the measurement window, not synchronisation
	case <-ag.Exited:
		return errors.New("c2d-agent exited while idle")
	}
	c1, err := CPUTime(ag.PID())
	if err != nil {
		return err
	}
	win := time.Since(t0)
	fp.IdleWindowSec = win.Seconds()
	fp.IdleCPUPct = 100 * float64(c1-c0) / float64(win)
	fp.RSSIdle, _, _ = RSS(ag.PID())
	r.logf("agent: ready in %.1f ms, idle RSS %.1f MiB, idle CPU %.3f%% over %s", fp.ReadyMS, mib(fp.RSSIdle), fp.IdleCPUPct, win.Round(time.Second))
	return nil
}

func (r *runner) agentStatic(fp *AgentFootprint) {
	fp.Binary = r.cfg.AgentBin
	if st, err := os.Stat(r.cfg.AgentBin); err == nil {
		fp.BinaryBytes = st.Size()
	}
	if f, err := elf.Open(r.cfg.AgentBin); err == nil {
		fp.Stripped = f.Section(".symtab") == nil
		f.Close()
	}
	dist := r.cfg.DistDir
	if dist == "" {
		if root, err := ModuleRoot(); err == nil {
			dist = filepath.Join(root, "dist")
		}
	}
	if dist != "" {
		matches, _ := filepath.Glob(filepath.Join(dist, "c2d-agent_*"))
		for _, m := range matches {
			if st, err := os.Stat(m); err == nil && st.Mode().IsRegular() {
				if fp.Dist == nil {
					fp.Dist = map[string]int64{}
				}
				fp.Dist[filepath.Base(m)] = st.Size()
			}
		}
	}
	if fp.Dist == nil {
		r.note("no dist/ binaries: only the host agent binary's size is reported (scripts/cross-build.sh builds every target)")
	}
}

func countSets(path string) (int, error) {
	ts, err := simhw.ReadTransitions(path)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, t := range ts {
		if t.Cause == "set" {
			n++
		}
	}
	return n, nil
}

// throughput: durable sends/s, completed/s with 1, 100, 1000 devices, raw QoS 1 through mochi and
// mosquitto with the same device counts.
func (r *runner) throughput(ctx context.Context) error {
	hub, err := r.startHub(ctx, "hub-throughput")
	if err != nil {
		return err
	}
	defer hub.Close()
	c := hub.Client()
	key := NewKey()
	maxD := 1
	for _, d := range r.cfg.ThroughputDevices {
		maxD = max(maxD, d)
	}
	devs := ids("tp", maxD)
	offline := ids("offline", 100)
	if err := RegisterDevices(ctx, c, append(append([]string{}, devs...), offline...), key, 32); err != nil {
		return err
	}
	S, C := r.cfg.ThroughputMessages, r.cfg.ThroughputSenders

	// Durable sends/s: every device offline, so this is the API + store alone.
	t0 := time.Now()
	if err := r.sendMany(ctx, c, offline, S, C); err != nil {
		return err
	}
	el := time.Since(t0)
	row := ThroughputRow{Name: "c2d durable sends (HTTP API, devices offline)", Devices: 0, Messages: S, Senders: C, PerSec: float64(S) / el.Seconds()}
	r.rep.Throughput = append(r.rep.Throughput, row)
	r.logf("%s: %.0f/s", row.Name, row.PerSec)
	if err := parallel2(ctx, len(offline), 8, func(i int) error { _, err := c.Purge(ctx, offline[i]); return err }); err != nil {
		return err
	}

	for _, d := range r.cfg.ThroughputDevices {
		send := func(dev string) error { return sendOne(ctx, c, dev) }
		if err := r.completedRow(ctx, hub, "c2d completed commands (send → PUBACK → Completed)", devs[:d], key, send); err != nil {
			return err
		}
	}
	// The largest row again, the sends on one AMQP link (as Azure's service SDKs send) instead
	// of an HTTP request each.
	cs, err := hub.ServiceConnectionString(ctx)
	if err != nil {
		return err
	}
	snd, err := DialAMQPSender(ctx, hub.Endpoints.AMQP, cs)
	if err != nil {
		return err
	}
	defer snd.Close()
	send := func(dev string) error { return snd.Send(ctx, dev, benchProps) }
	if err := r.completedRow(ctx, hub, AMQPCompletedRow, devs[:maxD], key, send); err != nil {
		return err
	}

	rawP, rawAddr, err := StartRawBrokerProc(r.cfg.Self, filepath.Join(r.cfg.WorkDir, "raw-broker-tp.log"))
	if err != nil {
		return err
	}
	defer rawP.Stop(5 * time.Second)
	if err := r.rawThroughput(ctx, "raw QoS 1 via plain mochi", rawAddr); err != nil {
		return err
	}
	mp, mAddr, err := StartMosquitto(r.cfg.WorkDir)
	if errors.Is(err, ErrNoMosquitto) {
		r.note("mosquitto throughput baseline skipped: %v", err)
		return nil
	} else if err != nil {
		return err
	}
	defer mp.Stop(5 * time.Second)
	return r.rawThroughput(ctx, "raw QoS 1 via mosquitto", mAddr)
}

// completedRow measures one completed-commands row: devs connect, ThroughputMessages commands
// are sent with send, round robin over devs (ThroughputSenders at once), and the row's time runs
// until every one was delivered and the hub's queue is empty.
func (r *runner) completedRow(ctx context.Context, hub *HubProc, name string, devs []string, key string, send func(dev string) error) error {
	S, C, d := r.cfg.ThroughputMessages, r.cfg.ThroughputSenders, len(devs)
	c := hub.Client()
	var got atomic.Int64
	cl, err := DialDevices(ctx, hub.Endpoints.MQTT, devs, key, r.cfg.ConnectConcurrency, func(string, *iothub.Message) { got.Add(1) })
	if err != nil {
		return err
	}
	defer CloseAll(cl)
	if !WaitFor(ctx, 60*time.Second, 20*time.Millisecond, func() bool {
		st, err := c.Status(ctx)
		return err == nil && st.ConnectedDeviceCount >= d
	}) {
		return fmt.Errorf("%s: hub does not report %d connected devices", name, d)
	}
	t0 := time.Now()
	if err := parallel2(ctx, S, C, func(i int) error { return send(devs[i%d]) }); err != nil {
		return err
	}
	sendEl := time.Since(t0)
	ok := WaitFor(ctx, 5*time.Minute, 5*time.Millisecond, func() bool {
		if got.Load() < int64(S) {
			return false
		}
		st, err := c.Status(ctx)
		return err == nil && st.QueuedMessageCount == 0
	})
	el := time.Since(t0)
	if !ok {
		return fmt.Errorf("%s, %d devices: queue not drained (%d of %d received)", name, d, got.Load(), S)
	}
	row := ThroughputRow{Name: name, Devices: d, Messages: S, Senders: C,
		PerSec: float64(S) / el.Seconds(), SendsSec: float64(S) / sendEl.Seconds(), Received: got.Load()}
	if got.Load() != int64(S) {
		r.note("%s, %d devices: %d deliveries for %d messages (redeliveries)", name, d, got.Load(), S)
	}
	r.rep.Throughput = append(r.rep.Throughput, row)
	r.logf("%s, %d devices: %.0f completed/s (sends %.0f/s)", row.Name, d, row.PerSec, row.SendsSec)
	return nil
}

// AMQPCompletedRow names the throughput row whose sends travel on one AMQP link.
const AMQPCompletedRow = "c2d completed commands, sent over one AMQP link"

// benchProps are every bench command's properties: what a board's config turns into a toggle.
var benchProps = []iothub.AppProperty{{Name: "target", Value: "out1"}, {Name: "action", Value: "toggle"}}

func (r *runner) sendMany(ctx context.Context, c *apiclient.Client, devs []string, n, conc int) error {
	return parallel2(ctx, n, conc, func(i int) error { return sendOne(ctx, c, devs[i%len(devs)]) })
}

// sendOne is one HTTP send of a bench command.
func sendOne(ctx context.Context, c *apiclient.Client, dev string) error {
	_, err := c.Send(ctx, dev, iothub.SendRequest{Properties: benchProps})
	return err
}

func (r *runner) rawThroughput(ctx context.Context, name, addr string) error {
	S, C := r.cfg.RawThroughputMessages, r.cfg.ThroughputSenders
	for _, d := range r.cfg.ThroughputDevices {
		var got atomic.Int64
		subs := make([]*LiteClient, d)
		err := parallel2(ctx, d, r.cfg.ConnectConcurrency, func(i int) error {
			// Client ids differ from row to row: the last row's "sub-0", just closed, may still be
			// on its way out of the broker, and a new connection under its id could lose its
			// subscription to the old one's clean-up (a make bench of 2026-12-04 failed with one
			// subscriber's share, 200 messages, missing: what that would do).
			c, err := DialLite(addr, LiteOptions{ClientID: fmt.Sprintf("sub-%d-%d", d, i), CleanSession: true, OnMessage: func(string, []byte) { got.Add(1) }})
			if err != nil {
				return err
			}
			subs[i] = c
			return c.Subscribe(fmt.Sprintf("bench/%d", i), 1, 30*time.Second)
		})
		if err != nil {
			CloseAll(subs)
			return err
		}
		pubs := make([]*LiteClient, C)
		for i := range pubs {
			if pubs[i], err = DialLite(addr, LiteOptions{ClientID: fmt.Sprintf("pub-%d-%d", d, i), CleanSession: true}); err != nil {
				CloseAll(subs)
				CloseAll(pubs)
				return err
			}
		}
		payload := []byte("target=out1&action=toggle")
		var next atomic.Int64
		t0 := time.Now()
		var wg sync.WaitGroup
		var perr atomic.Value
		for p := range pubs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := next.Add(1) - 1
					if i >= int64(S) {
						return
					}
					if err := pubs[p].Publish(fmt.Sprintf("bench/%d", i%int64(d)), payload, 1, 30*time.Second); err != nil {
						perr.Store(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		ok := WaitFor(ctx, 2*time.Minute, 2*time.Millisecond, func() bool { return got.Load() >= int64(S) })
		el := time.Since(t0)
		CloseAll(pubs)
		CloseAll(subs)
		if e, _ := perr.Load().(error); e != nil {
			return fmt.Errorf("%s: %w", name, e)
		}
		if !ok {
			return fmt.Errorf("%s, %d subscribers: %d of %d received", name, d, got.Load(), S)
		}
		row := ThroughputRow{Name: name, Devices: d, Messages: S, Senders: C, PerSec: float64(S) / el.Seconds(), Received: got.Load()}
		r.rep.Throughput = append(r.rep.Throughput, row)
		r.logf("%s, %d subscribers: %.0f msgs/s", name, d, row.PerSec)
	}
	return nil
}

// fleet: hub RSS per idle connected device, and connect rate, against plain mochi per connection.
func (r *runner) fleet(ctx context.Context) error {
	sizes := append([]int(nil), r.cfg.FleetSizes...)
	sort.Ints(sizes)
	if len(sizes) == 0 {
		return nil
	}
	maxN := sizes[len(sizes)-1]
	hub, err := r.startHub(ctx, "hub-fleet")
	if err != nil {
		return err
	}
	defer hub.Close()
	key := NewKey()
	devs := ids("fleet", maxN)
	t0 := time.Now()
	if err := RegisterDevices(ctx, hub.Client(), devs, key, 32); err != nil {
		return err
	}
	r.logf("fleet: registered %d devices in %s", maxN, time.Since(t0).Round(time.Millisecond))
	// Restart so the baseline RSS is a hub that just opened a store with maxN devices, not one
	// holding the registration's garbage.
	hub.Stop()
	if err := hub.Start(ctx); err != nil {
		return err
	}
	c := hub.Client()
	dial := func(lo, hi int) ([]*LiteClient, error) {
		return DialDevices(ctx, hub.Endpoints.MQTT, devs[lo:hi], key, r.cfg.ConnectConcurrency, nil)
	}
	waitConnected := func(n int) error {
		if !WaitFor(ctx, 2*time.Minute, 50*time.Millisecond, func() bool {
			st, err := c.Status(ctx)
			return err == nil && st.ConnectedDeviceCount >= n
		}) {
			return fmt.Errorf("hub does not report %d connected devices", n)
		}
		return nil
	}
	rows, conns, err := r.fleetRun(ctx, "c2d-hub (auth, session attach, queue)", hub.PID(), sizes, dial, waitConnected)
	if err != nil {
		return err
	}
	r.rep.Fleet = append(r.rep.Fleet, rows...)
	t0 = time.Now()
	hub.Stop()
	r.rep.HubShutdownMS = float64(time.Since(t0).Microseconds()) / 1000
	r.logf("c2d-hub: graceful shutdown with %d devices connected took %s", len(conns), time.Since(t0).Round(time.Millisecond))
	CloseAll(conns)

	rawP, rawAddr, err := StartRawBrokerProc(r.cfg.Self, filepath.Join(r.cfg.WorkDir, "raw-broker-fleet.log"))
	if err != nil {
		return err
	}
	defer rawP.Stop(5 * time.Second)
	rawDial := func(lo, hi int) ([]*LiteClient, error) {
		out := make([]*LiteClient, hi-lo)
		err := parallel2(ctx, hi-lo, r.cfg.ConnectConcurrency, func(i int) error {
			c, err := DialLite(rawAddr, LiteOptions{ClientID: devs[lo+i], KeepAlive: 20 * time.Minute})
			if err != nil {
				return err
			}
			out[i] = c
			return c.Subscribe("devices/"+devs[lo+i]+"/messages/devicebound/#", 1, 30*time.Second)
		})
		if err != nil {
			CloseAll(out)
			return nil, err
		}
		return out, nil
	}
	rows, conns, err = r.fleetRun(ctx, "plain mochi (no hooks)", rawP.PID(), sizes, rawDial, func(int) error { return nil })
	CloseAll(conns)
	if err != nil {
		return err
	}
	r.rep.Fleet = append(r.rep.Fleet, rows...)
	return nil
}

// fleetRun connects the fleet in steps and measures; the caller closes the returned clients.
func (r *runner) fleetRun(ctx context.Context, name string, pid int, sizes []int, dial func(lo, hi int) ([]*LiteClient, error), waitConnected func(int) error) (_ []FleetRow, all []*LiteClient, err error) {
	rss0 := settledRSS(pid)
	defer func() {
		if err != nil {
			CloseAll(all)
			all = nil
		}
	}()
	var rows []FleetRow
	prev := 0
	var connectTime time.Duration
	for _, n := range sizes {
		t0 := time.Now()
		cl, err := dial(prev, n)
		if err != nil {
			return nil, all, fmt.Errorf("%s: connect devices %d..%d: %w", name, prev, n, err)
		}
		connectTime += time.Since(t0)
		all = append(all, cl...)
		if err := waitConnected(n); err != nil {
			return nil, all, err
		}
		prev = n
		rss := settledRSS(pid)
		row := FleetRow{Name: name, Devices: n, RSSBefore: rss0, RSSAfter: rss, PerDevice: float64(rss-rss0) / float64(n),
			ConnectPerSec: float64(n) / connectTime.Seconds()}
		rows = append(rows, row)
		r.logf("%s: %d devices: RSS %.1f → %.1f MiB, %.1f KiB/device, %.0f connects/s", name, n, mib(rss0), mib(rss), row.PerDevice/1024, row.ConnectPerSec)
	}
	if idle := r.cfg.FleetIdle; idle > 0 && prev > 0 {
		time.Sleep(idle) // measurement window: the fleet stays idle this long, nothing to wait for
		rss := settledRSS(pid)
		row := FleetRow{Name: fmt.Sprintf("%s, after %s idle", name, idle), Devices: prev, RSSBefore: rss0, RSSAfter: rss, PerDevice: float64(rss-rss0) / float64(prev)}
		rows = append(rows, row)
		r.logf("%s: %d devices after %s idle: RSS %.1f MiB, %.1f KiB/device", name, prev, idle, mib(rss), row.PerDevice/1024)
	}
	return rows, all, nil
}

// settledRSS samples RSS over one second and returns the last sample (Go returns memory lazily;
// the window lets a GC cycle after the connect burst finish).
func settledRSS(pid int) int64 {
	var last int64
	for i := 0; i < 5; i++ {
		last, _, _ = RSS(pid)
		time.Sleep(200 * time.Millisecond) // measurement window, not synchronisation
	}
	return last
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func (r *runner) ratios() {
	lat := map[string]LatencyRow{}
	for _, l := range r.rep.Latency {
		lat[l.Name] = l
	}
	ratio := func(key, a, b string) {
		la, oka := lat[a]
		lb, okb := lat[b]
		if oka && okb && lb.Feedback.P50 > 0 {
			r.rep.Ratios[key] = round2(la.Feedback.P50 / lb.Feedback.P50)
		}
	}
	durable := func(key, a, b string) {
		la, oka := lat[a]
		lb, okb := lat[b]
		if oka && okb && la.Durable != nil && lb.Feedback.P50 > 0 {
			r.rep.Ratios[key] = round2(la.Durable.P50 / lb.Feedback.P50)
		}
	}
	durable(DurableVsRawKey, "c2d-agent", "raw-mochi")
	durable("durable_p50_agent_vs_raw_mosquitto", "c2d-agent", "raw-mosquitto")

	ratio("latency_p50_agent_vs_raw_mochi", "c2d-agent", "raw-mochi")
	ratio("latency_p50_agent_vs_raw_mosquitto", "c2d-agent", "raw-mosquitto")
	ratio("latency_p50_lite1_vs_raw_mochi", "lite-1", "raw-mochi")
	ratio("latency_p50_lite1_vs_raw_mosquitto", "lite-1", "raw-mosquitto")
	if l, ok := lat["c2d-agent"]; ok && l.Durable != nil && l.Durable.P50 > 0 {
		r.rep.Ratios[FeedbackVsDurableKey] = round2(l.Feedback.P50 / l.Durable.P50)
	}
	if r.rep.Fsync != nil && r.rep.Fsync.P50 > 0 {
		if l, ok := lat["c2d-agent"]; ok {
			r.rep.Ratios["latency_p50_agent_in_fsyncs"] = round2(l.Feedback.P50 / r.rep.Fsync.P50)
			if l.Durable != nil {
				r.rep.Ratios["durable_p50_agent_in_fsyncs"] = round2(l.Durable.P50 / r.rep.Fsync.P50)
			}
		}
	}
	tp := map[string]float64{}
	for _, t := range r.rep.Throughput {
		tp[fmt.Sprintf("%s/%d", t.Name, t.Devices)] = t.PerSec
	}
	for _, t := range r.rep.Throughput {
		if t.Name == AMQPCompletedRow {
			if raw := tp[fmt.Sprintf("raw QoS 1 via plain mochi/%d", t.Devices)]; raw > 0 {
				r.rep.Ratios[fmt.Sprintf("throughput_%d_devices_amqp_vs_raw_mochi", t.Devices)] = round2(t.PerSec / raw)
			}
			continue
		}
		if strings.HasPrefix(t.Name, "c2d completed") {
			if raw := tp[fmt.Sprintf("raw QoS 1 via plain mochi/%d", t.Devices)]; raw > 0 {
				r.rep.Ratios[fmt.Sprintf("throughput_%d_devices_vs_raw_mochi", t.Devices)] = round2(t.PerSec / raw)
			}
			if raw := tp[fmt.Sprintf("raw QoS 1 via mosquitto/%d", t.Devices)]; raw > 0 {
				r.rep.Ratios[fmt.Sprintf("throughput_%d_devices_vs_raw_mosquitto", t.Devices)] = round2(t.PerSec / raw)
			}
		}
		if strings.HasPrefix(t.Name, "c2d durable sends") {
			r.rep.Ratios["durable_sends_vs_azure_s1_unit"] = round2(t.PerSec / AzureS1SendsPerSec)
		}
	}
}

func round2(f float64) float64 { return float64(int64(f*100+0.5)) / 100 }

// WriteJSON writes the report to path.
func (rep *Report) WriteJSON(path string) error {
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

func machine(dir string) Machine {
	m := Machine{NProc: runtime.NumCPU(), Go: runtime.Version(), GOOSARCH: runtime.GOOS + "/" + runtime.GOARCH}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				_, v, _ := strings.Cut(l, ":")
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		l, _, _ := strings.Cut(string(b), "\n")
		m.MemTotal = strings.Join(strings.Fields(strings.TrimPrefix(l, "MemTotal:")), " ")
	}
	m.Hostname, _ = os.Hostname()
	m.Disk = diskOf(dir)
	return m
}

// diskOf names the mount holding dir: device, file system, mount point, and whether the block
// device is rotational.
func diskOf(dir string) string {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return ""
	}
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return ""
	}
	best, bestLen := "", -1
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 3 {
			continue
		}
		mp := f[1]
		if (abs == mp || strings.HasPrefix(abs, strings.TrimSuffix(mp, "/")+"/")) && len(mp) > bestLen {
			best, bestLen = fmt.Sprintf("%s (%s) on %s", f[0], f[2], mp), len(mp)
			if dev := strings.TrimPrefix(f[0], "/dev/"); dev != f[0] {
				if rot, err := os.ReadFile("/sys/block/" + dev + "/queue/rotational"); err == nil {
					if strings.TrimSpace(string(rot)) == "0" {
						best += ", non-rotational"
					} else {
						best += ", rotational"
					}
				}
			}
		}
	}
	return best
}
