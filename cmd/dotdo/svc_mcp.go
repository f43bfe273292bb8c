package main

import "context"

// This file wires the mcp service into the binary: its options, its
// config, its subcommands and its construction in serve.

// mcpConfig is the mcp service's part of the config.
type mcpConfig struct{}

// mcpOptions are the mcp service's flags and environment variables.
func mcpOptions() []*option { return nil }

// parse fills the mcp config from its options.
func (q *mcpConfig) parse(c *config, l optionLookup) error { return nil }

// mcpWiring holds the mcp service's bindings for the services wired after it.
type mcpWiring struct{}

// mcpCommands are the subcommands the mcp service adds beside serve.
func mcpCommands() map[string]command { return nil }

// wireMCP builds the mcp service in this process when it runs here,
// or a client to it when a service here needs it, and adds its upstream.
func wireMCP(ctx context.Context, w *wiring) error { return nil }
