// Package metrics holds dotdo's Prometheus metrics: HTTP requests per route
// and calls per service binding. One Registry per process, passed to the
// services that record into it.
package metrics

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/dotdo/dotdo/internal/apierr"
)

// Registry holds the metrics of one process.
type Registry struct {
	reg         *prometheus.Registry
	requests    *prometheus.CounterVec
	errors      *prometheus.CounterVec
	latency     *prometheus.HistogramVec
	calls       *prometheus.CounterVec
	callErrors  *prometheus.CounterVec
	callLatency *prometheus.HistogramVec
}

// New returns a registry with the Go runtime and process collectors.
func New() *Registry {
	r := &Registry{reg: prometheus.NewRegistry()}
	buckets := []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}
	r.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dotdo_http_requests_total", Help: "HTTP requests by route and status code.",
	}, []string{"route", "code"})
	r.errors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dotdo_http_request_errors_total", Help: "HTTP requests answered with a 4xx or 5xx status, by route and class.",
	}, []string{"route", "class"})
	r.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "dotdo_http_request_duration_seconds", Help: "HTTP request latency by route.", Buckets: buckets,
	}, []string{"route"})
	r.calls = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dotdo_binding_calls_total", Help: "Calls through a service binding, by binding and method.",
	}, []string{"binding", "method"})
	r.callErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dotdo_binding_call_errors_total", Help: "Calls through a service binding that failed, by binding, method and error code.",
	}, []string{"binding", "method", "code"})
	r.callLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "dotdo_binding_call_duration_seconds", Help: "Latency of calls through a service binding.", Buckets: buckets,
	}, []string{"binding", "method"})
	r.reg.MustRegister(r.requests, r.errors, r.latency, r.calls, r.callErrors, r.callLatency,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return r
}

// Handler serves the metrics in the Prometheus text format.
func (r *Registry) Handler() http.Handler {
	return promhttp.HandlerFor(r.reg, promhttp.HandlerOpts{})
}

// Request records one HTTP request.
func (r *Registry) Request(route string, status int, d time.Duration) {
	r.requests.WithLabelValues(route, strconv.Itoa(status)).Inc()
	r.latency.WithLabelValues(route).Observe(d.Seconds())
	switch {
	case status >= 500:
		r.errors.WithLabelValues(route, "5xx").Inc()
	case status >= 400:
		r.errors.WithLabelValues(route, "4xx").Inc()
	}
}

// Call records one call through a binding.
func (r *Registry) Call(binding, method string, d time.Duration, err error) {
	r.calls.WithLabelValues(binding, method).Inc()
	r.callLatency.WithLabelValues(binding, method).Observe(d.Seconds())
	if err != nil {
		r.callErrors.WithLabelValues(binding, method, string(apierr.From(err).Code)).Inc()
	}
}
