package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"connectrpc.com/connect"

	"github.com/dotdo/dotdo/internal/gateway"
	queuev1 "github.com/dotdo/dotdo/internal/gen/dotdo/queue/v1"
	"github.com/dotdo/dotdo/internal/gen/dotdo/queue/v1/queuev1connect"
	"github.com/dotdo/dotdo/internal/queue"
)

// This file wires the queue service into the binary: its options, its
// config, its subcommands and its construction in serve.
//
// The queues live in NATS JetStream: an embedded server with its file store
// under <data-dir>/nats (no TCP listener unless --nats-listen), or an
// external NATS given by NATS_URL. Queue settings are kept in NATS itself,
// so every process that needs the queue opens NATS directly: the queue
// service, the services that send to or consume from queues (email,
// webhooks, schedule), and a gateway serving /v1/queues. In split mode that
// takes NATS_URL (an external NATS, or the embedded server of the process
// running the queue service, opened with --nats-listen); a gateway without
// it answers /v1/queues with 404.

// queueConfig is the queue service's part of the config.
type queueConfig struct {
	NATSURL  string
	Listen   string
	Replicas int
	Prefix   string
}

// queueOptions are the queue service's flags and environment variables.
func queueOptions() []*option {
	return []*option{
		{flag: "nats-url", env: "NATS_URL", def: "", help: "nats://host:4222 (several separated by commas) puts the queues in an external NATS with JetStream (DOTDO_NATS_URL also works); empty runs NATS embedded with its store in <data-dir>/nats"},
		{flag: "nats-listen", env: "DOTDO_NATS_LISTEN", def: "", help: "host:port on which the embedded NATS accepts clients (so other dotdo processes can use NATS_URL=nats://host:port); none by default"},
		{flag: "queue-replicas", env: "DOTDO_QUEUE_REPLICAS", def: "1", help: "replicas of each queue's stream on an external NATS cluster (1-5)"},
		{flag: "queue-prefix", env: "DOTDO_QUEUE_PREFIX", def: "DOTDO", help: "prefix of the queue's stream, subject and bucket names in NATS, so several dotdo installations can share one NATS (letters, digits, _ and -)"},
	}
}

// parse fills the queue config from its options.
func (q *queueConfig) parse(c *config, l optionLookup) error {
	q.NATSURL = l.get("nats-url").value
	if q.NATSURL == "" {
		q.NATSURL = l.getenv("DOTDO_NATS_URL")
	}
	if q.NATSURL != "" {
		for _, part := range strings.Split(q.NATSURL, ",") {
			u, err := url.Parse(strings.TrimSpace(part))
			if err != nil || (u.Scheme != "nats" && u.Scheme != "tls" && u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
				return l.bad("nats-url", "want nats://host:4222, several separated by commas, or empty for the embedded NATS")
			}
		}
	}
	q.Listen = l.get("nats-listen").value
	if q.Listen != "" {
		if _, port, err := net.SplitHostPort(q.Listen); err != nil || port == "" {
			return l.bad("nats-listen", "want host:port, such as 127.0.0.1:4223")
		}
		if q.NATSURL != "" {
			return l.bad("nats-listen", "the embedded NATS is not used when NATS_URL is set; drop one of them")
		}
	}
	n, err := strconv.Atoi(l.get("queue-replicas").value)
	if err != nil || n < 1 || n > 5 {
		return l.bad("queue-replicas", "want a number from 1 to 5")
	}
	q.Replicas = n
	q.Prefix = l.get("queue-prefix").value
	if !prefixRE.MatchString(q.Prefix) {
		return l.bad("queue-prefix", "want 1-32 letters, digits, _ and -")
	}
	return nil
}

var prefixRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)

// queueWiring holds the queue service's bindings for the services wired
// after it: svc is the queue engine (nil when no service in this process
// needs the queue). Email, webhooks and schedule call it in-process.
type queueWiring struct {
	svc *queue.Service
}

// queueCommands are the subcommands the queue service adds beside serve.
func queueCommands() map[string]command { return nil }

// wireQueue opens the queue engine when a service in this process needs
// it, and adds the queue upstream (Connect RPC, and /v1/queues on a gateway).
func wireQueue(ctx context.Context, w *wiring) error {
	cfg := w.cfg
	users := cfg.has("email") || cfg.has("webhooks") || cfg.has("schedule")
	if !cfg.has("queue") && !users && !cfg.has("gateway") {
		return nil
	}
	qc := queue.Config{URL: cfg.Queue.NATSURL, Listen: cfg.Queue.Listen, Replicas: cfg.Queue.Replicas, Prefix: cfg.Queue.Prefix}
	if qc.URL == "" {
		if !cfg.has("queue") {
			if users {
				return errors.New("the services in this process send to queues: run the queue service here too, or give NATS_URL (the NATS that holds the queues: external, or the queue process's embedded one opened with --nats-listen)")
			}
			w.log.Info("queue routes off in this gateway: set NATS_URL to serve /v1/queues from here")
			return nil
		}
		qc.Dir = filepath.Join(cfg.DataDir, "nats")
		if cfg.split() && qc.Listen == "" && !(cfg.has("gateway") && users) {
			w.log.Warn("the queue's embedded NATS has no listener: processes other than this one cannot reach the queues; set --nats-listen here and NATS_URL there, or use an external NATS")
		}
	}
	svc, err := queue.Open(ctx, qc, w.log.With("service", "queue"))
	if err != nil {
		if qc.URL != "" {
			return fmt.Errorf("queue: %w (check --nats-url / NATS_URL)", err)
		}
		return fmt.Errorf("queue: %w (the embedded NATS keeps its store in %s; set --data-dir to a writable place)", err, qc.Dir)
	}
	w.closers = append(w.closers, svc.Close)
	if err := w.reg.Register(svc.Collector()); err != nil {
		return fmt.Errorf("queue metrics: %w", err)
	}
	w.queue.svc = svc
	where := qc.Dir
	if qc.URL != "" {
		where = "external NATS"
	}
	w.log.Info("queue service ready", "store", where, "listen", qc.Listen, "replicas", qc.Replicas)

	path, rpcHandler := queuev1connect.NewQueueServiceHandler(queue.RPC{S: svc}, w.serverOpts...)
	up := gateway.Upstream{
		Name: "queue", Prefixes: queue.Prefixes, RPCPath: path, RPC: rpcHandler,
		Health: func(ctx context.Context) error {
			_, err := queue.RPC{S: svc}.Health(ctx, connect.NewRequest(&queuev1.HealthRequest{}))
			return err
		},
	}
	if cfg.has("gateway") {
		authz := authorizer(cfg.Roles)
		up.Routes = func(mux *http.ServeMux) {
			queue.Routes(mux, svc, queue.RouteOptions{Authorize: authz})
		}
	}
	w.ups = append(w.ups, up)
	return nil
}
