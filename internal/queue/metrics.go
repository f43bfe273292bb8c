package queue

import (
	"github.com/prometheus/client_golang/prometheus"
)

// queueMetrics are the queue service's Prometheus metrics, per queue.
type queueMetrics struct {
	handler *prometheus.HistogramVec
	counts  *prometheus.Desc
}

// Collector returns the queue's Prometheus metrics: per queue, messages
// sent, delivered, acked, retried, dead-lettered and dropped by this
// process (dotdo_queue_messages_total{queue,event}) and handler durations
// (dotdo_queue_handler_duration_seconds{queue}). Register it once.
func (s *Service) Collector() prometheus.Collector {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.metrics == nil {
		s.metrics = &queueMetrics{
			handler: prometheus.NewHistogramVec(prometheus.HistogramOpts{
				Name:    "dotdo_queue_handler_duration_seconds",
				Help:    "Time push handlers took per batch, by queue.",
				Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
			}, []string{"queue"}),
			counts: prometheus.NewDesc("dotdo_queue_messages_total",
				"Queue messages by queue and event (sent, delivered, acked, retried, dead_lettered, dropped, handler_errors) in this process.",
				[]string{"queue", "event"}, nil),
		}
	}
	return collector{s}
}

type collector struct{ s *Service }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	c.s.metrics.handler.Describe(ch)
	ch <- c.s.metrics.counts
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	c.s.metrics.handler.Collect(ch)
	c.s.mu.RLock()
	defer c.s.mu.RUnlock()
	for q, n := range c.s.counters {
		for _, e := range []struct {
			name string
			v    int64
		}{
			{"sent", n.sent.Load()}, {"delivered", n.delivered.Load()}, {"acked", n.acked.Load()},
			{"retried", n.retried.Load()}, {"dead_lettered", n.deadLettered.Load()},
			{"dropped", n.dropped.Load()}, {"handler_errors", n.handlerErrors.Load()},
		} {
			ch <- prometheus.MustNewConstMetric(c.s.metrics.counts, prometheus.CounterValue, float64(e.v), q, e.name)
		}
	}
}
