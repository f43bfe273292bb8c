package webhooks

import "github.com/prometheus/client_golang/prometheus"

// metrics are the service's Prometheus series in this process.
type metrics struct {
	inbound   *prometheus.CounterVec // provider, outcome
	processed *prometheus.CounterVec // provider, status
	outbound  *prometheus.CounterVec // result
	// eventsDropped counts dotdo events dropped because the emitter's
	// buffer was full.
	eventsDropped prometheus.Counter
}

func newMetrics() *metrics {
	return &metrics{
		inbound: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dotdo_webhooks_inbound_total",
			Help: "Inbound webhook requests by provider and outcome (accepted, duplicate, rejected)."}, []string{"provider", "outcome"}),
		processed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dotdo_webhooks_processed_total",
			Help: "Inbound events processed by provider and resulting status (processed, ignored, failed, retry)."}, []string{"provider", "status"}),
		outbound: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dotdo_webhooks_outbound_attempts_total",
			Help: "Outbound delivery attempts by result (succeeded, retry, failed, gone)."}, []string{"result"}),
		eventsDropped: NewEventsDropped(),
	}
}

// Describe implements prometheus.Collector.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	m.inbound.Describe(ch)
	m.processed.Describe(ch)
	m.outbound.Describe(ch)
	m.eventsDropped.Describe(ch)
}

// Collect implements prometheus.Collector.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	m.inbound.Collect(ch)
	m.processed.Collect(ch)
	m.outbound.Collect(ch)
	m.eventsDropped.Collect(ch)
}

// NewEventsDropped returns the counter of dotdo events an emitter dropped
// because its buffer was full: the service's own, or a split-mode
// gateway's for NewRemoteEvents.
func NewEventsDropped() prometheus.Counter {
	return prometheus.NewCounter(prometheus.CounterOpts{Name: "dotdo_webhooks_events_dropped_total",
		Help: "dotdo events (thing.created, email.delivered, ...) dropped before publishing because the emitter's buffer was full."})
}

// Collector returns the service's metrics for a registry.
func (s *Service) Collector() prometheus.Collector { return s.metrics }
