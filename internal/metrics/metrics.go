// Package metrics holds dotdo's Prometheus metrics: HTTP requests per route
// and calls per service binding. One Registry per process, passed to the
// services that record into it.
package metrics

import (
	"net/http"
	"strconv"
	"sync"
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

	// routes and bindings cache the series of each label set: finding a
	// child of a vector hashes and checks its labels on every call, which
	// showed in profiles of the GET path. Both are bounded by the routes,
	// status codes and binding methods the process has.
	routes   sync.Map // routeKey -> *routeSeries
	bindings sync.Map // callKey -> *callSeries
}

type routeKey struct {
	route  string
	status int
}

type routeSeries struct {
	requests prometheus.Counter
	latency  prometheus.Observer
	errors   prometheus.Counter // nil below 400
}

type callKey struct{ binding, method string }

type callSeries struct {
	calls   prometheus.Counter
	latency prometheus.Observer
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
	k := routeKey{route, status}
	v, ok := r.routes.Load(k)
	if !ok {
		s := &routeSeries{
			requests: r.requests.WithLabelValues(route, strconv.Itoa(status)),
			latency:  r.latency.WithLabelValues(route),
		}
		switch {
		case status >= 500:
			s.errors = r.errors.WithLabelValues(route, "5xx")
		case status >= 400:
			s.errors = r.errors.WithLabelValues(route, "4xx")
		}
		v, _ = r.routes.LoadOrStore(k, s)
	}
	s := v.(*routeSeries)
	s.requests.Inc()
	s.latency.Observe(d.Seconds())
	if s.errors != nil {
		s.errors.Inc()
	}
}

// Call records one call through a binding.
func (r *Registry) Call(binding, method string, d time.Duration, err error) {
	k := callKey{binding, method}
	v, ok := r.bindings.Load(k)
	if !ok {
		v, _ = r.bindings.LoadOrStore(k, &callSeries{
			calls:   r.calls.WithLabelValues(binding, method),
			latency: r.callLatency.WithLabelValues(binding, method),
		})
	}
	s := v.(*callSeries)
	s.calls.Inc()
	s.latency.Observe(d.Seconds())
	if err != nil {
		r.callErrors.WithLabelValues(binding, method, string(apierr.From(err).Code)).Inc()
	}
}

// Register adds a service's own collector (such as the queue service's
// per-queue metrics) to the registry.
func (r *Registry) Register(c prometheus.Collector) error {
	return r.reg.Register(c)
}
