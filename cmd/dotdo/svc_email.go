package main

import "context"

// This file wires the email service into the binary: its options, its
// config, its subcommands and its construction in serve.

// emailConfig is the email service's part of the config.
type emailConfig struct{}

// emailOptions are the email service's flags and environment variables.
func emailOptions() []*option { return nil }

// parse fills the email config from its options.
func (q *emailConfig) parse(c *config, l optionLookup) error { return nil }

// emailWiring holds the email service's bindings for the services wired after it.
type emailWiring struct{}

// emailCommands are the subcommands the email service adds beside serve.
func emailCommands() map[string]command { return nil }

// wireEmail builds the email service in this process when it runs here,
// or a client to it when a service here needs it, and adds its upstream.
func wireEmail(ctx context.Context, w *wiring) error { return nil }
