package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/dotdo/dotdo/internal/gateway"
	"github.com/dotdo/dotdo/internal/gen/dotdo/auth/v1/authv1connect"
	webhooksv1 "github.com/dotdo/dotdo/internal/gen/dotdo/webhooks/v1"
	"github.com/dotdo/dotdo/internal/gen/dotdo/webhooks/v1/webhooksv1connect"
	"github.com/dotdo/dotdo/internal/thingsdb"
	"github.com/dotdo/dotdo/internal/webhooks"
)

// This file wires the webhooks service into the binary: its options, its
// config, its subcommands and its construction in serve.

// webhooksConfig is the webhooks service's part of the config.
type webhooksConfig struct {
	Secrets       map[string][]string
	Namespace     string
	Retention     time.Duration
	MaxBody       int64
	GitHubMaxBody int64
	AllowPrivate  bool
	URL           string
}

// webhooksOptions are the webhooks service's flags and environment variables.
func webhooksOptions() []*option {
	return []*option{
		{flag: "webhooks-stripe-secrets", env: "DOTDO_WEBHOOKS_STRIPE_SECRETS", def: "", help: "Stripe endpoint signing secrets (whsec_...), current first, separated by commas; any verifies (rotation). Empty refuses Stripe deliveries"},
		{flag: "webhooks-github-secrets", env: "DOTDO_WEBHOOKS_GITHUB_SECRETS", def: "", help: "GitHub webhook secrets, separated by commas"},
		{flag: "webhooks-workos-secrets", env: "DOTDO_WEBHOOKS_WORKOS_SECRETS", def: "", help: "WorkOS webhook secrets, separated by commas"},
		{flag: "webhooks-resend-secrets", env: "DOTDO_WEBHOOKS_RESEND_SECRETS", def: "", help: "Resend (Svix) signing secrets (whsec_ + base64), separated by commas"},
		{flag: "webhooks-namespace", env: "DOTDO_WEBHOOKS_NAMESPACE", def: "default", help: "namespace where Stripe, GitHub and directory-group things are written"},
		{flag: "webhooks-retention", env: "DOTDO_WEBHOOKS_RETENTION", def: "720h", help: "how long verified inbound payloads are kept (the event record stays)"},
		{flag: "webhooks-max-body", env: "DOTDO_WEBHOOKS_MAX_BODY", def: "1MiB", help: "largest inbound webhook body for Stripe, WorkOS and Resend"},
		{flag: "webhooks-github-max-body", env: "DOTDO_WEBHOOKS_GITHUB_MAX_BODY", def: "25MiB", help: "largest inbound GitHub webhook body"},
		{flag: "webhooks-allow-private", env: "DOTDO_WEBHOOKS_ALLOW_PRIVATE", def: "false", help: "let outbound webhook endpoints be on loopback or private addresses (development only)"},
		{flag: "webhooks-url", env: "DOTDO_WEBHOOKS_URL", def: "", help: "URL of a webhooks service in another process (http://host:port), for a gateway run without it"},
	}
}

// parse fills the webhooks config from its options.
func (q *webhooksConfig) parse(c *config, l optionLookup) error {
	q.Secrets = map[string][]string{}
	for _, p := range webhooks.Providers {
		flag := "webhooks-" + p + "-secrets"
		for _, s := range strings.Split(l.get(flag).value, ",") {
			if s = strings.TrimSpace(s); s == "" {
				continue
			}
			if p == webhooks.Resend {
				if _, err := webhooks.SvixKey(s); err != nil {
					return l.bad(flag, "want whsec_ followed by base64, as Resend shows it")
				}
			}
			q.Secrets[p] = append(q.Secrets[p], s)
		}
	}
	q.Namespace = l.get("webhooks-namespace").value
	if !thingsdb.ValidNamespace(q.Namespace) || thingsdb.IsSystemNamespace(q.Namespace) {
		return l.bad("webhooks-namespace", "want a tenant namespace such as default (a-z, 0-9, - and _, not starting with _)")
	}
	d, err := time.ParseDuration(l.get("webhooks-retention").value)
	if err != nil || d < time.Hour {
		return l.bad("webhooks-retention", "want a duration of at least 1h, such as 720h")
	}
	q.Retention = d
	if q.MaxBody, err = parseBytes(l.get("webhooks-max-body").value); err != nil || q.MaxBody < 1<<10 {
		return l.bad("webhooks-max-body", "want a size of at least 1KiB, such as 1MiB")
	}
	if q.GitHubMaxBody, err = parseBytes(l.get("webhooks-github-max-body").value); err != nil || q.GitHubMaxBody < 1<<10 {
		return l.bad("webhooks-github-max-body", "want a size of at least 1KiB, such as 25MiB")
	}
	switch v := l.get("webhooks-allow-private").value; v {
	case "true", "1":
		q.AllowPrivate = true
	case "false", "0", "":
	default:
		return l.bad("webhooks-allow-private", "want true or false")
	}
	q.URL = l.get("webhooks-url").value
	return nil
}

// webhooksWiring holds the webhooks service's bindings for the services
// wired after it: svc is the service when it runs in this process. Other
// services emit outbound events with svc.Publish (or the Emit RPC).
type webhooksWiring struct {
	svc *webhooks.Service
	// events emits dotdo's own events: the service's emitter, or, in a
	// gateway whose webhooks service runs elsewhere (--webhooks-url), one
	// that sends them there.
	events *webhooks.Events
}

// webhooksCommands are the subcommands the webhooks service adds beside serve.
func webhooksCommands() map[string]command { return nil }

// webhooksBinding is what the gateway needs from the webhooks service.
type webhooksBinding interface {
	webhooks.API
	Health(context.Context, *connect.Request[webhooksv1.HealthRequest]) (*connect.Response[webhooksv1.HealthResponse], error)
}

// wireWebhooks builds the webhooks service in this process when it runs here,
// or a client to it when a service here needs it, and adds its upstream.
func wireWebhooks(ctx context.Context, w *wiring) error {
	cfg := w.cfg
	wc := cfg.Webhooks
	var (
		api     webhooksBinding
		path    = "/" + webhooksv1connect.WebhooksServiceName + "/"
		handler http.Handler
	)
	switch {
	case cfg.has("webhooks"):
		if w.queue.svc == nil {
			return errors.New("the webhooks service needs the queue: run the queue here too, or give NATS_URL")
		}
		var users webhooks.Users
		if w.auth != nil {
			users = w.auth
		} else if cfg.AuthURL != "" {
			users = authv1connect.NewAuthServiceClient(w.client, cfg.AuthURL, w.clientOpts...)
		}
		key, err := secretKey(cfg)
		if err != nil {
			return err
		}
		svc, err := webhooks.New(thingsdb.Instrument(w.db, w.reg, "db"), w.queue.svc, users, webhooksEmail(w), webhooks.Config{
			Secrets: wc.Secrets, Namespace: wc.Namespace, PayloadRetention: wc.Retention,
			Outbound: webhooks.OutboundConfig{SecretKey: key, AllowPrivate: wc.AllowPrivate},
		}, w.log)
		if err != nil {
			return err
		}
		if err := svc.Start(ctx); err != nil {
			return fmt.Errorf("start webhooks: %w", err)
		}
		if err := w.reg.Register(svc.Collector()); err != nil {
			return fmt.Errorf("webhooks metrics: %w", err)
		}
		w.webhooks.svc, w.webhooks.events = svc, svc.Events()
		wireEvents(w, svc)
		api = svc
		path, handler = webhooksv1connect.NewWebhooksServiceHandler(svc, w.serverOpts...)
		var providers []string
		for _, p := range webhooks.Providers {
			if len(wc.Secrets[p]) > 0 {
				providers = append(providers, p)
			}
		}
		w.log.Info("webhooks service ready", "providers", providers, "namespace", wc.Namespace)
	case cfg.has("gateway") && wc.URL != "":
		client := webhooksv1connect.NewWebhooksServiceClient(w.client, wc.URL, w.clientOpts...)
		api = client
		handler = proxy(wc.URL, cfg.InternalToken, w.client.Transport)
		// Thing writes through this gateway's routes become events in the
		// webhooks process.
		dropped := webhooks.NewEventsDropped()
		if err := w.reg.Register(dropped); err != nil {
			return fmt.Errorf("webhooks metrics: %w", err)
		}
		w.webhooks.events = webhooks.NewRemoteEvents(w.db, client, w.log.With("service", "webhooks-events"), dropped)
		w.webhooks.events.Start(ctx)
	default:
		return nil
	}
	up := gateway.Upstream{
		Name: "webhooks", Prefixes: webhooks.Prefixes, Open: webhooks.OpenRoutes, RPCPath: path, RPC: handler,
		MaxBodyBytes: max(wc.MaxBody, wc.GitHubMaxBody),
		Health: func(ctx context.Context) error {
			_, err := api.Health(ctx, connect.NewRequest(&webhooksv1.HealthRequest{}))
			return err
		},
	}
	if cfg.has("gateway") {
		opts := webhooks.RouteOptions{Authorize: authorizer(cfg.Roles), MaxBody: map[string]int64{
			webhooks.Stripe: wc.MaxBody, webhooks.WorkOS: wc.MaxBody, webhooks.Resend: wc.MaxBody, webhooks.GitHub: wc.GitHubMaxBody}}
		up.Routes = func(mux *http.ServeMux) { webhooks.Routes(mux, api, opts) }
	}
	w.ups = append(w.ups, up)
	return nil
}

// webhooksEmail is the email binding for Resend events: the email service
// in this process or its client (--email-url); nil without either, and
// Resend events then wait and fail as unavailable.
func webhooksEmail(w *wiring) webhooks.Email {
	if w.email.api == nil {
		return nil
	}
	return w.email.api
}
