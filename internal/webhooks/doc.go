// Package webhooks is dotdo's webhooks service. Inbound, it receives
// Stripe, GitHub, WorkOS and Resend (Svix) webhooks at /webhooks/{provider},
// verifies each provider's signature on the raw body, stores and enqueues
// every verified event exactly once under the provider's event id before
// answering, records every rejected request with its reason, and processes
// events from the queue through the other services' bindings (db, auth,
// email). Outbound, it delivers dotdo's own events to users' endpoints
// signed the Standard Webhooks way, with retries, and keeps a delivery log.
package webhooks
