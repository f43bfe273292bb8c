package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/dotdo/dotdo/internal/auth"
	"github.com/dotdo/dotdo/internal/email"
	"github.com/dotdo/dotdo/internal/gateway"
	"github.com/dotdo/dotdo/internal/gen/dotdo/auth/v1/authv1connect"
	emailv1 "github.com/dotdo/dotdo/internal/gen/dotdo/email/v1"
	"github.com/dotdo/dotdo/internal/gen/dotdo/email/v1/emailv1connect"
	"github.com/dotdo/dotdo/internal/ratelimit"
	"github.com/dotdo/dotdo/internal/thingsdb"
)

// This file wires the email service into the binary: its options, its
// config, its subcommands and its construction in serve.

// emailConfig is the email service's part of the config.
type emailConfig struct {
	Provider  string
	From      string
	Templates string
	Resend    email.ResendConfig
	SendGrid  email.SendGridConfig
	SMTP      email.SMTPConfig
	// URL is an email service in another process, for the services here
	// that send email (auth) or report events (webhooks).
	URL string
	// AppName and LinkURL fill the auth flows' emails.
	AppName string
	LinkURL string
}

// emailOptions are the email service's flags and environment variables.
// Provider secrets are read from the environment only.
func emailOptions() []*option {
	return []*option{
		{flag: "email-provider", env: "DOTDO_EMAIL_PROVIDER", def: "outbox", help: "how email is delivered: outbox (kept, never delivered), resend (key in DOTDO_EMAIL_RESEND_API_KEY), sendgrid (key in DOTDO_EMAIL_SENDGRID_API_KEY) or smtp (password in DOTDO_EMAIL_SMTP_PASSWORD); sk_test_ keys always use the outbox"},
		{flag: "email-from", env: "DOTDO_EMAIL_FROM", def: "", help: "sender of emails that name none, such as \"Acme <noreply@acme.com>\""},
		{flag: "email-templates", env: "DOTDO_EMAIL_TEMPLATES", def: "", help: "directory of email templates (<name>.subject.txt, <name>.html, <name>.txt) that override or add to the built-in ones"},
		{flag: "email-resend-url", env: "DOTDO_EMAIL_RESEND_URL", def: "https://api.resend.com", help: "base URL of the Resend API"},
		{flag: "email-sendgrid-url", env: "DOTDO_EMAIL_SENDGRID_URL", def: "https://api.sendgrid.com", help: "base URL of the SendGrid API"},
		{flag: "email-smtp-host", env: "DOTDO_EMAIL_SMTP_HOST", def: "", help: "SMTP server for --email-provider smtp"},
		{flag: "email-smtp-port", env: "DOTDO_EMAIL_SMTP_PORT", def: "0", help: "SMTP port; 0 means 587 (starttls), 465 (tls) or 25 (none)"},
		{flag: "email-smtp-username", env: "DOTDO_EMAIL_SMTP_USERNAME", def: "", help: "SMTP user name for AUTH PLAIN; the password comes from DOTDO_EMAIL_SMTP_PASSWORD"},
		{flag: "email-smtp-security", env: "DOTDO_EMAIL_SMTP_SECURITY", def: "starttls", help: "starttls (required), tls (implicit, port 465) or none (a relay on this host)"},
		{flag: "email-app-name", env: "DOTDO_EMAIL_APP_NAME", def: "dotdo", help: "the application's name in the account emails (password reset, verification, invitations, magic links)"},
		{flag: "email-link-url", env: "DOTDO_EMAIL_LINK_URL", def: "", help: "base URL of the application's pages the account emails link to (/reset-password, /verify-email, /accept-invite, /magic-link, each with ?token=); --public-url when empty"},
		{flag: "email-url", env: "DOTDO_EMAIL_URL", def: "", help: "URL of an email service in another process (http://host:port), for the services here that send email"},
	}
}

// parse fills the email config from its options.
func (q *emailConfig) parse(c *config, l optionLookup) error {
	q.Provider = l.get("email-provider").value
	if !slices.Contains([]string{"outbox", "resend", "sendgrid", "smtp"}, q.Provider) {
		return l.bad("email-provider", "use outbox, resend, sendgrid or smtp")
	}
	q.From = l.get("email-from").value
	q.Templates = l.get("email-templates").value
	if q.Templates != "" {
		if st, err := os.Stat(q.Templates); err != nil || !st.IsDir() {
			return l.bad("email-templates", "not a readable directory")
		}
	}
	for _, f := range []string{"email-resend-url", "email-sendgrid-url"} {
		if u, err := url.Parse(l.get(f).value); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return l.bad(f, "want a base URL such as https://api.example.com")
		}
	}
	q.Resend = email.ResendConfig{APIKey: l.getenv("DOTDO_EMAIL_RESEND_API_KEY"), BaseURL: l.get("email-resend-url").value}
	q.SendGrid = email.SendGridConfig{APIKey: l.getenv("DOTDO_EMAIL_SENDGRID_API_KEY"), BaseURL: l.get("email-sendgrid-url").value}
	port, err := strconv.Atoi(l.get("email-smtp-port").value)
	if err != nil || port < 0 || port > 65535 {
		return l.bad("email-smtp-port", "want a port number, or 0 for the default")
	}
	q.SMTP = email.SMTPConfig{Host: l.get("email-smtp-host").value, Port: port, Username: l.get("email-smtp-username").value,
		Password: l.getenv("DOTDO_EMAIL_SMTP_PASSWORD"), Security: l.get("email-smtp-security").value}
	if !slices.Contains([]string{"starttls", "tls", "none"}, q.SMTP.Security) {
		return l.bad("email-smtp-security", "use starttls, tls or none")
	}
	if c.has("email") {
		switch {
		case q.Provider == "resend" && q.Resend.APIKey == "":
			return errors.New("--email-provider resend needs the API key in DOTDO_EMAIL_RESEND_API_KEY")
		case q.Provider == "sendgrid" && q.SendGrid.APIKey == "":
			return errors.New("--email-provider sendgrid needs the API key in DOTDO_EMAIL_SENDGRID_API_KEY")
		case q.Provider == "smtp" && q.SMTP.Host == "":
			return l.bad("email-smtp-host", "--email-provider smtp needs the SMTP server's host")
		}
	}
	q.AppName = l.get("email-app-name").value
	q.LinkURL = l.get("email-link-url").value
	if q.LinkURL != "" {
		if u, err := url.Parse(q.LinkURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return l.bad("email-link-url", "want a base URL such as https://app.example.com")
		}
	}
	q.URL = strings.TrimSuffix(l.get("email-url").value, "/")
	if q.URL != "" {
		if u, err := url.Parse(q.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return l.bad("email-url", "want the email service's base URL, such as http://127.0.0.1:8790")
		}
	}
	return nil
}

// emailWiring holds the email service's bindings for the services wired
// after it: api is the service itself in this process or a Connect client
// to it (nil when neither), svc the service when it runs here.
type emailWiring struct {
	api email.API
	svc *email.Service
}

// emailCommands are the subcommands the email service adds beside serve.
func emailCommands() map[string]command { return nil }

// wireEmail builds the email service in this process when it runs here,
// or a client to it when a service here needs it, and adds its upstream.
func wireEmail(ctx context.Context, w *wiring) error {
	ec := &w.cfg.Email
	if !w.cfg.has("email") {
		if ec.URL == "" {
			wireAuthFlows(w) // a gateway apart from auth forwards to it
			return nil
		}
		client := emailv1connect.NewEmailServiceClient(w.client, ec.URL, w.clientOpts...)
		w.email.api = client
		wireAuthFlows(w)
		if w.cfg.has("gateway") {
			// The REST routes run here and call the email process through
			// the client; its Connect calls are forwarded.
			w.ups = append(w.ups, gateway.Upstream{
				Name: "email", Prefixes: email.Prefixes, RPCPath: "/" + emailv1connect.EmailServiceName + "/", RPC: proxy(ec.URL, w.cfg.InternalToken, w.client.Transport),
				MaxBodyBytes: email.MaxRequestBytes,
				Routes: func(mux *http.ServeMux) {
					email.Routes(mux, client, email.RouteOptions{Authorize: authorizer(w.cfg.Roles)})
				},
				Health: func(ctx context.Context) error {
					_, err := client.Health(ctx, connect.NewRequest(&emailv1.HealthRequest{}))
					return err
				},
			})
		}
		return nil
	}
	if w.queue.svc == nil {
		return errors.New("the email service needs the queue: run it in this process too (--services ...,queue,email) or give NATS_URL")
	}
	svc, err := email.New(thingsdb.Instrument(w.db, w.reg, "db"), w.queue.svc, email.Config{
		Provider: ec.Provider, From: ec.From, TemplateDir: ec.Templates,
		Resend: ec.Resend, SendGrid: ec.SendGrid, SMTP: ec.SMTP, Metrics: w.reg,
	}, w.log.With("service", "email"))
	if err != nil {
		return fmt.Errorf("email: %w", err)
	}
	if err := svc.Start(ctx); err != nil {
		return err
	}
	w.email.api, w.email.svc = svc, svc
	path, handler := emailv1connect.NewEmailServiceHandler(svc, w.serverOpts...)
	up := gateway.Upstream{
		Name: "email", Prefixes: email.Prefixes, RPCPath: path, RPC: handler,
		// Attachments (10 MB, base64) need more than the default body
		// limit, on the REST routes and on Send calls from a gateway in
		// another process.
		MaxBodyBytes: email.MaxRequestBytes,
		Health: func(ctx context.Context) error {
			_, err := svc.Health(ctx, connect.NewRequest(&emailv1.HealthRequest{}))
			return err
		},
	}
	if w.cfg.has("gateway") {
		up.Routes = func(mux *http.ServeMux) {
			email.Routes(mux, svc, email.RouteOptions{Authorize: authorizer(w.cfg.Roles)})
		}
	}
	w.ups = append(w.ups, up)
	wireAuthFlows(w)
	w.log.Info("email service ready", "provider", ec.Provider, "templates", len(svc.Templates().List()))
	return nil
}

// wireAuthFlows gives the auth service in this process its email flows
// (password reset, verification, invitations, magic links) over the email
// binding, served over Connect (AuthFlowsService) and, with the gateway
// here, as REST routes; a gateway apart from auth serves the routes over a
// client to the auth process.
func wireAuthFlows(w *wiring) {
	ec := &w.cfg.Email
	// The routes that send email to any address are limited per address
	// (5 in 15 minutes) and per IP (50), in Redis when the gateway's
	// limits are.
	opts := auth.RouteOptions{Can: w.can, CustomRoles: w.cfg.Roles}
	if w.cfg.has("gateway") {
		if lim, err := newLimits(w.cfg, w.log); err == nil {
			opts.LoginThrottle = &loginThrottle{limiter: lim.limiter,
				account: ratelimit.Policy{Name: "email-flow-address", Limit: 5, Period: 15 * time.Minute},
				perIP:   ratelimit.Policy{Name: "email-flow-ip", Limit: 50, Period: 15 * time.Minute}}
		}
	}
	up := gateway.Upstream{Name: "auth-flows", Prefixes: auth.FlowPrefixes, Open: auth.FlowOpenRoutes}
	var api auth.FlowsAPI
	switch {
	case w.authSvc != nil && w.email.api != nil:
		from := ec.From
		if from == "" {
			host := "localhost"
			if u, err := url.Parse(w.cfg.PublicURL); err == nil && u.Hostname() != "" {
				host = u.Hostname()
			}
			from = ec.AppName + " <noreply@" + host + ">"
		}
		svc := auth.NewFlows(w.authSvc, w.email.api, auth.FlowConfig{AppName: ec.AppName, LinkURL: ec.LinkURL, From: from}).Service()
		api = svc
		up.RPCPath, up.RPC = authv1connect.NewAuthFlowsServiceHandler(svc, w.serverOpts...)
	case w.authSvc == nil && w.cfg.has("gateway") && w.cfg.AuthURL != "":
		api = authv1connect.NewAuthFlowsServiceClient(w.client, w.cfg.AuthURL, w.clientOpts...)
		up.RPCPath, up.RPC = "/"+authv1connect.AuthFlowsServiceName+"/", proxy(w.cfg.AuthURL, w.cfg.InternalToken, w.client.Transport)
	default:
		return
	}
	if w.cfg.has("gateway") {
		up.Routes = func(mux *http.ServeMux) { auth.FlowRoutes(mux, api, opts) }
	}
	w.ups = append(w.ups, up)
}
