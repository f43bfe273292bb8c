package email

import "github.com/prometheus/client_golang/prometheus"

// Registerer takes the service's Prometheus collectors; a
// *metrics.Registry fits.
type Registerer interface {
	Register(prometheus.Collector) error
}

// emailMetrics are the service's Prometheus series.
type emailMetrics struct {
	accepted   *prometheus.CounterVec   // provider, status (queued, scheduled, suppressed)
	deliveries *prometheus.CounterVec   // provider, outcome (sent, retry, failed)
	latency    *prometheus.HistogramVec // provider
	events     *prometheus.CounterVec   // type
}

func newMetrics(r Registerer) *emailMetrics {
	m := &emailMetrics{
		accepted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dotdo_email_accepted_total", Help: "Emails accepted by provider and initial status (queued, scheduled, suppressed).",
		}, []string{"provider", "status"}),
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dotdo_email_deliveries_total", Help: "Delivery attempts by provider and outcome (sent, retry, failed).",
		}, []string{"provider", "outcome"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "dotdo_email_provider_seconds", Help: "Time a provider took to accept or refuse an email.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"provider"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dotdo_email_events_total", Help: "Provider events recorded, by type (duplicates not counted).",
		}, []string{"type"}),
	}
	if r != nil {
		for _, c := range []prometheus.Collector{m.accepted, m.deliveries, m.latency, m.events} {
			r.Register(c)
		}
	}
	return m
}
