// Package identity carries the caller's identity, as the gateway
// established it, through a request's context.
package identity

import (
	"context"

	authv1 "github.com/dotdo/dotdo/internal/gen/dotdo/auth/v1"
)

type key struct{}

// With returns ctx carrying id.
func With(ctx context.Context, id *authv1.Identity) context.Context {
	return context.WithValue(ctx, key{}, id)
}

// From returns the identity in ctx, or nil.
func From(ctx context.Context) *authv1.Identity {
	id, _ := ctx.Value(key{}).(*authv1.Identity)
	return id
}
