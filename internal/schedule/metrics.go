package schedule

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the service's Prometheus series.
type metrics struct {
	runs  *prometheus.CounterVec
	skew  prometheus.Histogram
	claim *prometheus.CounterVec
}

func newMetrics() *metrics {
	return &metrics{
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dotdo_schedule_runs_total",
			Help: "Runs this replica ended, by status (succeeded, failed, skipped, abandoned)."}, []string{"status"}),
		skew: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "dotdo_schedule_fire_skew_seconds",
			Help:    "How late this replica started scheduled runs' first attempt after the scheduled time (jitter included).",
			Buckets: []float64{0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}}),
		claim: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dotdo_schedule_claims_total",
			Help: "Tick claims by this replica: won (it ran the tick) or lost (another replica had it)."}, []string{"result"}),
	}
}

// Collectors returns the service's metrics, for a Prometheus registry.
func (s *Service) Collectors() []prometheus.Collector {
	return []prometheus.Collector{s.m.runs, s.m.skew, s.m.claim}
}

func (m *metrics) fired(scheduled, started time.Time) {
	m.skew.Observe(started.Sub(scheduled).Seconds())
}
