package bench

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/c2d-project/c2d/cloud/apiclient"
	"github.com/c2d-project/c2d/cloud/iothub"
	"github.com/c2d-project/c2d/cloud/twin"
)

// MethodsReport is the "methods" section: direct-method round trips against a raw MQTT
// request/reply in the same run, and the rate at which devices' reported-property updates are
// made durable and answered.
type MethodsReport struct {
	// API is a direct method through the service API: POST /twins/{id}/methods → hub →
	// $iothub/methods/POST → a lightweight device answering at once → HTTP answer, one at a time.
	API Dist `json:"method_via_service_api"`
	// Raw is the baseline: a QoS 0 request → QoS 0 reply between two lightweight clients through
	// plain mochi (the broker library c2d-hub embeds, no hooks, no store, no HTTP).
	Raw Dist `json:"raw_mqtt_request_reply"`
	// Reported updates: closed loop, each device waits for its 204 before the next PATCH.
	ReportedPerDevice ReportedRate `json:"reported_one_device"`
	ReportedHubWide   ReportedRate `json:"reported_many_devices"`
}

// ReportedRate is one reported-property run.
type ReportedRate struct {
	Devices int     `json:"devices"`
	Updates int     `json:"updates"`
	PerSec  float64 `json:"updates_per_sec"`
	RTT     Dist    `json:"patch_to_204"`
}

// Method runs and sizes (the section stays well under a minute on 2 cores).
const (
	methodCalls      = 10000
	reportedOne      = 2000
	reportedDevices  = 100
	reportedPerEach  = 50
	methodAnswerBody = `{"outcome":"done"}`
)

func (r *runner) methods(ctx context.Context) error {
	hub, err := r.startHub(ctx, "hub-methods")
	if err != nil {
		return err
	}
	defer hub.Close()
	c := hub.Client()
	key := NewKey()
	m := &MethodsReport{}

	// 1. Direct methods through the service API, one call at a time.
	if err := RegisterDevices(ctx, c, []string{"meth-0"}, key, 1); err != nil {
		return err
	}
	dev, err := dialMethodDevice(hub.Endpoints.MQTT, "meth-0", key)
	if err != nil {
		return err
	}
	warm := methodCalls / 20
	var ds []time.Duration
	for i := 0; i < methodCalls+warm && ctx.Err() == nil; i++ {
		t0 := time.Now()
		res, err := c.InvokeMethod(ctx, "meth-0", iothub.MethodRequest{MethodName: "state"})
		if err != nil || res.Status != 200 {
			dev.Close()
			return fmt.Errorf("invoke state on meth-0: %v (status %d)", err, res.Status)
		}
		if i >= warm {
			ds = append(ds, time.Since(t0))
		}
	}
	dev.Close()
	m.API = Summarise(ds)
	r.logf("direct method via service API: p50 %.3f p99 %.3f ms", m.API.P50, m.API.P99)

	// 2. Baseline: QoS 0 request → QoS 0 reply through plain mochi, in its own process like the hub.
	rawP, rawAddr, err := StartRawBrokerProc(r.cfg.Self, filepath.Join(r.cfg.WorkDir, "raw-broker-methods.log"))
	if err != nil {
		return err
	}
	raw, err := rawRequestReply(ctx, rawAddr, methodCalls)
	rawP.Stop(5 * time.Second)
	if err != nil {
		return err
	}
	m.Raw = raw
	r.logf("raw MQTT QoS 0 request/reply: p50 %.3f p99 %.3f ms", raw.P50, raw.P99)

	// 3. Reported properties: one device, then many at once.
	if m.ReportedPerDevice, err = r.reported(ctx, hub.Endpoints.MQTT, c, key, "rep1", 1, reportedOne); err != nil {
		return err
	}
	if m.ReportedHubWide, err = r.reported(ctx, hub.Endpoints.MQTT, c, key, "repn", reportedDevices, reportedPerEach); err != nil {
		return err
	}
	r.rep.Methods = m
	if m.Raw.P50 > 0 {
		r.rep.Ratios["method_p50_vs_raw_mqtt"] = round2(m.API.P50 / m.Raw.P50)
	}
	if m.Raw.P99 > 0 {
		r.rep.Ratios["method_p99_vs_raw_mqtt"] = round2(m.API.P99 / m.Raw.P99)
	}
	return nil
}

// dialMethodDevice connects a device that answers every direct method at once with 200.
func dialMethodDevice(addr, id, key string) (*LiteClient, error) {
	tok, err := iothub.DeviceConnectionString{HostName: HostName, DeviceID: id, SharedAccessKey: key}.Token(time.Now(), time.Hour)
	if err != nil {
		return nil, err
	}
	var c *LiteClient
	c, err = DialLite(addr, LiteOptions{
		ClientID: id, Username: iothub.FormatUsername(HostName, id, "", nil), Password: tok, CleanSession: true,
		OnMessage: func(topic string, _ []byte) {
			if _, rid, err := iothub.ParseMethodRequestTopic(topic); err == nil {
				// From the reader goroutine: QoS 0 never waits for anything.
				_, _ = c.PublishAsync(iothub.MethodResponseTopic(200, rid), []byte(methodAnswerBody), 0)
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("device %s: %w", id, err)
	}
	if err := c.Subscribe(iothub.MethodsFilter, 0, 30*time.Second); err != nil {
		c.Abort()
		return nil, fmt.Errorf("device %s: %w", id, err)
	}
	return c, nil
}

// rawRequestReply: the method path without the hub, QoS 0 both ways as Azure's methods are.
func rawRequestReply(ctx context.Context, addr string, n int) (Dist, error) {
	ds, err := roundTrip{
		name: "raw-method-request-reply", qos: 0, reqFilter: "mreq/#", replyFilter: "mres/#",
		reqTopic: func(i int) string { return "mreq/state/" + strconv.Itoa(i) },
		payload:  []byte("null"),
		reply: func(topic string, _ []byte) (string, []byte) {
			return "mres/" + strings.TrimPrefix(topic, "mreq/"), []byte(methodAnswerBody)
		},
	}.measure(ctx, addr, n)
	if err != nil {
		return Dist{}, err
	}
	return Summarise(ds), nil
}

// reported: devices each send `each` reported-property PATCHes closed loop (the next after the
// previous one's 204), all devices at once; the rate is updates ÷ wall time.
func (r *runner) reported(ctx context.Context, addr string, c *apiclient.Client, key, prefix string, devices, each int) (ReportedRate, error) {
	devs := ids(prefix, devices)
	if err := RegisterDevices(ctx, c, devs, key, 16); err != nil {
		return ReportedRate{}, err
	}
	type dev struct {
		c   *LiteClient
		res chan string // the 204's topic
	}
	ds := make([]*dev, devices)
	err := parallel2(ctx, devices, 16, func(i int) error {
		tok, err := iothub.DeviceConnectionString{HostName: HostName, DeviceID: devs[i], SharedAccessKey: key}.Token(time.Now(), time.Hour)
		if err != nil {
			return err
		}
		d := &dev{res: make(chan string, 1)}
		d.c, err = DialLite(addr, LiteOptions{ClientID: devs[i], Username: iothub.FormatUsername(HostName, devs[i], "", nil), Password: tok,
			CleanSession: true, OnMessage: func(topic string, _ []byte) {
				if strings.HasPrefix(topic, "$iothub/twin/res/") {
					d.res <- topic
				}
			}})
		if err != nil {
			return fmt.Errorf("device %s: %w", devs[i], err)
		}
		ds[i] = d
		return d.c.Subscribe(twin.ResponseFilter, 0, 30*time.Second)
	})
	defer func() {
		for _, d := range ds {
			if d != nil && d.c != nil {
				d.c.Close()
			}
		}
	}()
	if err != nil {
		return ReportedRate{}, err
	}
	var mu sync.Mutex
	var rtts []time.Duration
	var failed atomic.Value
	var wg sync.WaitGroup
	t0 := time.Now()
	for i, d := range ds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := make([]time.Duration, 0, each)
			for k := 0; k < each && ctx.Err() == nil; k++ {
				body := fmt.Sprintf(`{"outputs":{"out1":{"on":%t,"seq":%d}},"uptime_s":%d}`, k%2 == 0, k, k)
				t := time.Now()
				if _, err := d.c.PublishAsync(twin.ReportedPrefix+"?$rid="+strconv.Itoa(k+1), []byte(body), 0); err != nil {
					failed.Store(err)
					return
				}
				select {
				case topic := <-d.res:
					if !strings.HasPrefix(topic, "$iothub/twin/res/204/") {
						failed.Store(fmt.Errorf("%s: reported update answered %s", devs[i], topic))
						return
					}
				case <-time.After(30 * time.Second):
					failed.Store(fmt.Errorf("%s: no answer to reported update %d within 30s", devs[i], k+1))
					return
				}
				local = append(local, time.Since(t))
			}
			mu.Lock()
			rtts = append(rtts, local...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	el := time.Since(t0)
	if e, _ := failed.Load().(error); e != nil {
		return ReportedRate{}, e
	}
	// What a service reads back is the last update of each device.
	tw, err := c.GetTwin(ctx, devs[0])
	if err != nil {
		return ReportedRate{}, err
	}
	if want := int64(each - 1); fmt.Sprint(tw.Properties.Reported["uptime_s"]) != strconv.FormatInt(want, 10) {
		return ReportedRate{}, fmt.Errorf("%s: twin reports uptime_s %v after %d updates, want %d", devs[0], tw.Properties.Reported["uptime_s"], each, want)
	}
	rr := ReportedRate{Devices: devices, Updates: len(rtts), PerSec: float64(len(rtts)) / el.Seconds(), RTT: Summarise(rtts)}
	r.logf("reported properties, %d device(s): %.0f updates/s, PATCH→204 p50 %.2f p99 %.2f ms", devices, rr.PerSec, rr.RTT.P50, rr.RTT.P99)
	return rr, nil
}

func (rep *Report) printMethods(tw io.Writer) {
	m := rep.Methods
	if m == nil {
		return
	}
	fmt.Fprintln(tw, "DIRECT METHODS (ms, one call at a time)\tp50\tp95\tp99\tmax\t")
	fmt.Fprintf(tw, "c2d-hub: POST /twins/{id}/methods → device answers at once → 200\t%.3f\t%.3f\t%.3f\t%.3f\t\n", m.API.P50, m.API.P95, m.API.P99, m.API.Max)
	fmt.Fprintf(tw, "raw MQTT QoS 0 request → reply via plain mochi (baseline)\t%.3f\t%.3f\t%.3f\t%.3f\t\n\n", m.Raw.P50, m.Raw.P95, m.Raw.P99, m.Raw.Max)
	fmt.Fprintln(tw, "REPORTED PROPERTIES (closed loop: PATCH → 204)\tdevices\tupdates\tper second\tp50 ms\tp99 ms\t")
	for _, x := range []struct {
		name string
		r    ReportedRate
	}{{"one device", m.ReportedPerDevice}, {"many devices at once (hub-wide)", m.ReportedHubWide}} {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.0f\t%.2f\t%.2f\t\n", x.name, x.r.Devices, x.r.Updates, x.r.PerSec, x.r.RTT.P50, x.r.RTT.P99)
	}
	fmt.Fprintln(tw)
}
