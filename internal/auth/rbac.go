package auth

import (
	"slices"
	"strings"

	authv1 "github.com/dotdo/dotdo/internal/gen/dotdo/auth/v1"
)

// A permission is resource:action, such as things:read or keys:manage;
// '*' matches any resource or action ("things:*", "*").

// BuiltinRoles are the roles every installation has.
var BuiltinRoles = map[string][]string{
	"admin":  {"*"},
	"user":   {"things:*", "search:read", "queue:send", "queue:consume", "email:send", "schedule:read", "analytics:read", "sessions:manage"},
	"viewer": {"things:read", "search:read", "schedule:read", "analytics:read"},
}

// ValidPermission reports whether p is resource:action or "*", each part
// 1-32 characters of a-z, 0-9, '_', '-', or '*'.
func ValidPermission(p string) bool {
	if p == "*" {
		return true
	}
	res, act, ok := strings.Cut(p, ":")
	return ok && validPart(res) && validPart(act)
}

func validPart(s string) bool {
	if s == "*" {
		return true
	}
	if len(s) == 0 || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Grants reports whether granted permission g covers wanted permission w.
func Grants(g, w string) bool {
	if g == "*" || g == w {
		return true
	}
	gr, ga, ok := strings.Cut(g, ":")
	if !ok {
		return false
	}
	wr, wa, ok := strings.Cut(w, ":")
	if !ok {
		return false
	}
	return (gr == "*" || gr == wr) && (ga == "*" || ga == wa)
}

// Expand returns the permissions of roles, resolving built-in roles and
// the custom ones given; unknown roles grant nothing.
func Expand(roles []string, custom map[string][]string) []string {
	var out []string
	for _, r := range roles {
		if ps, ok := BuiltinRoles[r]; ok {
			out = append(out, ps...)
		} else if ps, ok := custom[r]; ok {
			out = append(out, ps...)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// Allowed reports whether any of perms covers want.
func Allowed(perms []string, want string) bool {
	for _, g := range perms {
		if Grants(g, want) {
			return true
		}
	}
	return false
}

// Can reports whether id may use permission on namespace ns. Grants on
// "*" cover every tenant namespace; a system namespace ('_' prefix) needs a
// grant on that namespace itself, or the "*" permission on "*" (an admin).
// Service identities may do everything.
func Can(id *authv1.Identity, ns, permission string, custom map[string][]string) bool {
	if id == nil {
		return false
	}
	if id.Kind == "service" {
		return true
	}
	perms := func(g *authv1.Grants) []string {
		return append(Expand(g.GetRoles(), custom), g.GetPermissions()...)
	}
	if g, ok := id.Grants[ns]; ok && Allowed(perms(g), permission) {
		return true
	}
	g, ok := id.Grants["*"]
	if !ok {
		return false
	}
	if strings.HasPrefix(ns, "_") {
		return Allowed(perms(g), "*")
	}
	return Allowed(perms(g), permission)
}
