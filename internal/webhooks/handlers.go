package webhooks

// routes returns the event handlers by provider and type. Types without a
// handler are stored, answered 2xx and marked ignored.
func (s *Service) routes() map[string]map[string]handler {
	return map[string]map[string]handler{
		Stripe: s.stripeHandlers(),
		GitHub: s.githubHandlers(),
		WorkOS: s.workosHandlers(),
		Resend: s.resendHandlers(),
	}
}
