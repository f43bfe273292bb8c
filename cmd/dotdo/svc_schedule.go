package main

import "context"

// This file wires the schedule service into the binary: its options, its
// config, its subcommands and its construction in serve.

// scheduleConfig is the schedule service's part of the config.
type scheduleConfig struct{}

// scheduleOptions are the schedule service's flags and environment variables.
func scheduleOptions() []*option { return nil }

// parse fills the schedule config from its options.
func (q *scheduleConfig) parse(c *config, l optionLookup) error { return nil }

// scheduleWiring holds the schedule service's bindings for the services wired after it.
type scheduleWiring struct{}

// scheduleCommands are the subcommands the schedule service adds beside serve.
func scheduleCommands() map[string]command { return nil }

// wireSchedule builds the schedule service in this process when it runs here,
// or a client to it when a service here needs it, and adds its upstream.
func wireSchedule(ctx context.Context, w *wiring) error { return nil }
