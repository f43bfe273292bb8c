package dispatch

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// scriptMetrics are the per-script series: requests by outcome, duration,
// and requests ended by a limit.
type scriptMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	kills    *prometheus.CounterVec
}

// Registerer takes collectors: a *metrics.Registry or a
// prometheus.Registerer.
type Registerer interface {
	Register(prometheus.Collector) error
}

func newScriptMetrics(reg Registerer, eng *engine) *scriptMetrics {
	m := &scriptMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dotdo_dispatch_requests_total", Help: "Requests run by the dispatcher, by namespace, script and outcome (ok, timeout, trap, too_large, bad_response, canceled).",
		}, []string{"ns", "script", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "dotdo_dispatch_duration_seconds", Help: "Time to run a script for one request, instantiation included.",
			Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"ns", "script"}),
		kills: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dotdo_dispatch_limit_kills_total", Help: "Requests ended by a limit, by namespace, script and limit (time, memory, response).",
		}, []string{"ns", "script", "limit"}),
	}
	inMemory := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "dotdo_dispatch_compiled_modules", Help: "Compiled modules held in memory (at most --dispatch-max-compiled while none of the rest is running).",
	}, func() float64 { n, _ := eng.stats(); return float64(n) })
	evictions := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "dotdo_dispatch_compiled_evictions_total", Help: "Compiled modules freed to stay within --dispatch-max-compiled; each is compiled again, from the on-disk cache, when next requested.",
	}, func() float64 { _, n := eng.stats(); return float64(n) })
	if reg != nil {
		for _, c := range []prometheus.Collector{m.requests, m.duration, m.kills, inMemory, evictions} {
			reg.Register(c) // a second service in one process shares the first one's series
		}
	}
	return m
}

func (m *scriptMetrics) observe(ns, script, outcome string, d time.Duration) {
	m.requests.WithLabelValues(ns, script, outcome).Inc()
	m.duration.WithLabelValues(ns, script).Observe(d.Seconds())
}

func (m *scriptMetrics) kill(ns, script, limit string) {
	m.kills.WithLabelValues(ns, script, limit).Inc()
}
