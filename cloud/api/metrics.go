package api

import (
	"context"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/c2d-project/c2d/cloud/hub"
	"github.com/c2d-project/c2d/cloud/iothub"
)

// Metrics holds c2d-hub's Prometheus metrics in their own registry (never the global one, so two
// hubs in one test process do not collide). Counters are fed by hub.Events (HubEvents) and the
// HTTP handlers; gauges are read from the hub's status at scrape time, so they are never out of
// step with the store.
type Metrics struct {
	reg  *prometheus.Registry
	once sync.Once

	sent         prometheus.Counter
	settled      *prometheus.CounterVec
	deliveries   prometheus.Counter
	abandons     prometheus.Counter
	connects     *prometheus.CounterVec
	sendToSettle prometheus.Histogram
	httpRequests *prometheus.CounterVec
	httpDuration *prometheus.HistogramVec
	stages       *prometheus.HistogramVec
}

// StatusFunc reads the hub's status (hub.Hub.Status).
type StatusFunc func(ctx context.Context) (iothub.HubStatus, error)

// NewMetrics creates the metrics. The gauges appear once WatchStatus names their source.
func NewMetrics() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.sent = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "c2d_messages_sent_total", Help: "Cloud-to-device messages accepted (made durable) by the hub.",
	})
	m.settled = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "c2d_messages_settled_total",
		Help: "Messages that reached a terminal state, by outcome (Success, Rejected, Expired, DeliveryCountExceeded, Purged).",
	}, []string{"outcome"})
	m.deliveries = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "c2d_deliveries_total", Help: "Deliveries of messages to devices (redeliveries included).",
	})
	m.abandons = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "c2d_abandons_total", Help: "Deliveries returned to the queue: abandoned by the device, lock expired or device disconnected.",
	})
	m.connects = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "c2d_device_connection_changes_total", Help: "Device sessions attached (connected) and detached (disconnected).",
	}, []string{"event"})
	m.sendToSettle = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "c2d_send_to_settle_seconds",
		Help:    "Time from a message's send to its terminal state.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600},
	})
	m.httpRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "c2d_http_requests_total", Help: "Service API requests by route pattern and HTTP status code.",
	}, []string{"route", "code"})
	m.httpDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "c2d_http_request_duration_seconds",
		Help:    "Service API request latency by route pattern (long-polls included).",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
	}, []string{"route"})
	m.stages = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "c2d_stage_seconds",
		Help:    "Time spent in each stage of a command's path through the hub (decode_auth, commit, deliver, settle, feedback; docs/benchmarks.md).",
		Buckets: []float64{.00005, .0001, .00025, .0005, .00075, .001, .0015, .0025, .005, .01, .025, .05, .1, .25, 1},
	}, []string{"stage"})
	for _, st := range hub.Stages {
		m.stages.WithLabelValues(string(st)) // export every stage from the first scrape
	}
	m.reg.MustRegister(m.sent, m.settled, m.deliveries, m.abandons, m.connects, m.sendToSettle,
		m.httpRequests, m.httpDuration, m.stages,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, o := range []iothub.FeedbackStatus{iothub.StatusSuccess, iothub.StatusRejected, iothub.StatusExpired,
		iothub.StatusDeliveryCountExceeded, iothub.StatusPurged} {
		m.settled.WithLabelValues(string(o)) // export zeros so rate() works from the first scrape
	}
	return m
}

// WatchStatus makes status (hub.Hub.Status) the source of the gauges (queue depth, connected
// devices, devices, pending feedback), read at scrape time. Only the first call counts: the hub
// is opened after its metrics exist, because the metrics feed its Events.
func (m *Metrics) WatchStatus(status StatusFunc) {
	m.once.Do(func() { m.reg.MustRegister(&statusCollector{status: status}) })
}

// Registry is the registry /metrics serves; callers may register their own collectors on it.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in Prometheus' text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// HubEvents returns the hub.Events that feed the counters; pass it to hub.Open. next, when
// non-nil, is called after each metric update (for logs or tests).
func (m *Metrics) HubEvents(next *hub.Events) hub.Events {
	if next == nil {
		next = &hub.Events{}
	}
	return hub.Events{
		Sent: func(id string) {
			m.sent.Inc()
			if next.Sent != nil {
				next.Sent(id)
			}
		},
		Delivered: func(id string) {
			m.deliveries.Inc()
			if next.Delivered != nil {
				next.Delivered(id)
			}
		},
		Settled: func(id string, outcome iothub.FeedbackStatus, d time.Duration) {
			m.settled.WithLabelValues(string(outcome)).Inc()
			if d > 0 {
				m.sendToSettle.Observe(d.Seconds())
			}
			if next.Settled != nil {
				next.Settled(id, outcome, d)
			}
		},
		Abandoned: func(id string) {
			m.abandons.Inc()
			if next.Abandoned != nil {
				next.Abandoned(id)
			}
		},
		Stage: func(st hub.Stage, d time.Duration) {
			m.observeStage(st, d)
			if next.Stage != nil {
				next.Stage(st, d)
			}
		},
		Connected: func(id string, up bool) {
			if up {
				m.connects.WithLabelValues("connected").Inc()
			} else {
				m.connects.WithLabelValues("disconnected").Inc()
			}
			if next.Connected != nil {
				next.Connected(id, up)
			}
		},
	}
}

func (m *Metrics) observeStage(st hub.Stage, d time.Duration) {
	m.stages.WithLabelValues(string(st)).Observe(d.Seconds())
}

func (m *Metrics) observeHTTP(route string, code int, d time.Duration) {
	m.httpRequests.WithLabelValues(route, strconv.Itoa(code)).Inc()
	m.httpDuration.WithLabelValues(route).Observe(d.Seconds())
}

// statusCollector reads the hub's status once per scrape.
type statusCollector struct {
	status StatusFunc
}

var (
	descQueueDepth = prometheus.NewDesc("c2d_queue_depth",
		"Messages pending delivery or settlement (Enqueued + Invisible), all devices.", nil, nil)
	descConnected = prometheus.NewDesc("c2d_devices_connected", "Devices with a live, subscribed session.", nil, nil)
	descDevices   = prometheus.NewDesc("c2d_devices", "Devices in the registry, by status.", []string{"status"}, nil)
	descFeedback  = prometheus.NewDesc("c2d_feedback_pending",
		"Feedback records not yet completed by a service client.", nil, nil)
	descUp = prometheus.NewDesc("c2d_hub_up", "1 when the hub's store answered the scrape's status query.", nil, nil)
)

func (c *statusCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descQueueDepth
	ch <- descConnected
	ch <- descDevices
	ch <- descFeedback
	ch <- descUp
}

func (c *statusCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := c.status(ctx)
	if err != nil {
		ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, 1)
	ch <- prometheus.MustNewConstMetric(descQueueDepth, prometheus.GaugeValue, float64(st.QueuedMessageCount))
	ch <- prometheus.MustNewConstMetric(descConnected, prometheus.GaugeValue, float64(st.ConnectedDeviceCount))
	ch <- prometheus.MustNewConstMetric(descDevices, prometheus.GaugeValue, float64(st.EnabledDeviceCount), "enabled")
	ch <- prometheus.MustNewConstMetric(descDevices, prometheus.GaugeValue,
		float64(st.TotalDeviceCount-st.EnabledDeviceCount), "disabled")
	ch <- prometheus.MustNewConstMetric(descFeedback, prometheus.GaugeValue, float64(st.PendingFeedbackCount))
}
