package main

import "context"

// This file wires the queue service into the binary: its options, its
// config, its subcommands and its construction in serve.

// queueConfig is the queue service's part of the config.
type queueConfig struct{}

// queueOptions are the queue service's flags and environment variables.
func queueOptions() []*option { return nil }

// parse fills the queue config from its options.
func (q *queueConfig) parse(c *config, l optionLookup) error { return nil }

// queueWiring holds the queue service's bindings for the services wired after it.
type queueWiring struct{}

// queueCommands are the subcommands the queue service adds beside serve.
func queueCommands() map[string]command { return nil }

// wireQueue builds the queue service in this process when it runs here,
// or a client to it when a service here needs it, and adds its upstream.
func wireQueue(ctx context.Context, w *wiring) error { return nil }
