package main

import "context"

// This file wires the webhooks service into the binary: its options, its
// config, its subcommands and its construction in serve.

// webhooksConfig is the webhooks service's part of the config.
type webhooksConfig struct{}

// webhooksOptions are the webhooks service's flags and environment variables.
func webhooksOptions() []*option { return nil }

// parse fills the webhooks config from its options.
func (q *webhooksConfig) parse(c *config, l optionLookup) error { return nil }

// webhooksWiring holds the webhooks service's bindings for the services wired after it.
type webhooksWiring struct{}

// webhooksCommands are the subcommands the webhooks service adds beside serve.
func webhooksCommands() map[string]command { return nil }

// wireWebhooks builds the webhooks service in this process when it runs here,
// or a client to it when a service here needs it, and adds its upstream.
func wireWebhooks(ctx context.Context, w *wiring) error { return nil }
