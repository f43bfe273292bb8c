package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestEmailConfig checks the email options fail at start with a message
// that says how to fix them, and that provider secrets come from the
// environment.
func TestEmailConfig(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		args []string
		env  []string
		want string
	}{
		{[]string{"--email-provider", "pigeon"}, nil, "use outbox, resend, sendgrid or smtp"},
		{[]string{"--email-provider", "resend"}, nil, "DOTDO_EMAIL_RESEND_API_KEY"},
		{[]string{"--email-provider", "sendgrid"}, nil, "DOTDO_EMAIL_SENDGRID_API_KEY"},
		{[]string{"--email-provider", "smtp"}, nil, "--email-smtp-host"},
		{[]string{"--email-provider", "smtp", "--email-smtp-host", "mx.test", "--email-smtp-security", "maybe"}, nil, "use starttls, tls or none"},
		{[]string{"--email-smtp-port", "99999"}, nil, "want a port number"},
		{[]string{"--email-templates", dir + "/missing"}, nil, "not a readable directory"},
		{[]string{"--email-link-url", "app.example.com"}, nil, "want a base URL"},
		{[]string{"--email-url", "ftp://x"}, nil, "email service's base URL"},
	}
	for _, tc := range cases {
		var stderr bytes.Buffer
		_, err := parseConfig("serve", append([]string{"--data-dir", dir}, tc.args...), env(tc.env...), &stderr)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parseConfig(%v) = %v; want an error mentioning %q", tc.args, err, tc.want)
		}
	}
	// Secrets from the environment only; a provider's key is enough.
	c, err := parseConfig("serve", []string{"--data-dir", dir, "--email-provider", "resend"}, env("DOTDO_EMAIL_RESEND_API_KEY=re_123"), &bytes.Buffer{})
	if err != nil || c.Email.Resend.APIKey != "re_123" || c.Email.Resend.BaseURL != "https://api.resend.com" {
		t.Fatalf("resend config = %+v, %v", c.Email.Resend, err)
	}
	// A key needed only by the email service is not asked of a process
	// that does not run it.
	if _, err := parseConfig("serve", []string{"--data-dir", dir, "--services", "db", "--email-provider", "resend"}, env(), &bytes.Buffer{}); err != nil {
		t.Fatalf("db-only process with --email-provider resend: %v", err)
	}
	// --help lists every email option.
	var help bytes.Buffer
	run(context.Background(), []string{"serve", "--help"}, env(), nil, &help, &help)
	for _, f := range []string{"--email-provider", "--email-from", "--email-templates", "--email-smtp-host", "--email-url", "--email-link-url", "DOTDO_EMAIL_SMTP_PASSWORD"} {
		if !strings.Contains(help.String(), f) {
			t.Errorf("serve --help does not mention %s", f)
		}
	}
}
