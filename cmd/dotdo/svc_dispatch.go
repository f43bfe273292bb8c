package main

import "context"

// This file wires the dispatch service into the binary: its options, its
// config, its subcommands and its construction in serve.

// dispatchConfig is the dispatch service's part of the config.
type dispatchConfig struct{}

// dispatchOptions are the dispatch service's flags and environment variables.
func dispatchOptions() []*option { return nil }

// parse fills the dispatch config from its options.
func (q *dispatchConfig) parse(c *config, l optionLookup) error { return nil }

// dispatchWiring holds the dispatch service's bindings for the services wired after it.
type dispatchWiring struct{}

// dispatchCommands are the subcommands the dispatch service adds beside serve.
func dispatchCommands() map[string]command { return nil }

// wireDispatch builds the dispatch service in this process when it runs here,
// or a client to it when a service here needs it, and adds its upstream.
func wireDispatch(ctx context.Context, w *wiring) error { return nil }
