package queue

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// queueMetrics are the queue service's Prometheus metrics, per queue.
type queueMetrics struct {
	handler                *prometheus.HistogramVec
	counts                 *prometheus.Desc
	backlog, inFlight, age *prometheus.Desc
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
			backlog:  prometheus.NewDesc("dotdo_queue_backlog", "Messages ready or in flight (not yet acked), by queue, from JetStream.", []string{"queue"}, nil),
			inFlight: prometheus.NewDesc("dotdo_queue_in_flight", "Messages delivered and not yet acked, by queue, from JetStream.", []string{"queue"}, nil),
			age:      prometheus.NewDesc("dotdo_queue_oldest_message_age_seconds", "Age of the oldest message ready or in flight, by queue.", []string{"queue"}, nil),
		}
	}
	return collector{s}
}

type collector struct{ s *Service }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	c.s.metrics.handler.Describe(ch)
	ch <- c.s.metrics.counts
	ch <- c.s.metrics.backlog
	ch <- c.s.metrics.inFlight
	ch <- c.s.metrics.age
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	m := c.s.metrics
	m.handler.Collect(ch)
	// Depths of every queue, from JetStream, within a bounded time.
	c.s.mu.RLock()
	names := make([]string, 0, len(c.s.settings))
	for q := range c.s.settings {
		names = append(names, q)
	}
	c.s.mu.RUnlock()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, q := range names {
		cons, err := c.s.js.Consumer(ctx, c.s.stream(q), consumerName)
		if err != nil {
			continue
		}
		info := cons.CachedInfo()
		ch <- prometheus.MustNewConstMetric(m.backlog, prometheus.GaugeValue, float64(info.NumPending+uint64(info.NumAckPending)), q)
		ch <- prometheus.MustNewConstMetric(m.inFlight, prometheus.GaugeValue, float64(info.NumAckPending), q)
		age := 0.0
		if info.NumPending+uint64(info.NumAckPending) > 0 {
			if str, err := c.s.js.Stream(ctx, c.s.stream(q)); err == nil {
				if raw, err := str.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(c.s.subject(q))); err == nil {
					age = max(0, time.Since(raw.Time).Seconds())
				}
			}
		}
		ch <- prometheus.MustNewConstMetric(m.age, prometheus.GaugeValue, age, q)
	}
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
