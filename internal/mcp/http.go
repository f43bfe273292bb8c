package mcp

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/dotdo/dotdo/internal/apierr"
	"github.com/dotdo/dotdo/internal/identity"
	"github.com/dotdo/dotdo/internal/reqid"
)

// Path is where the Streamable HTTP endpoint is served.
const Path = "/mcp"

// MetadataPath is the RFC 9728 protected resource metadata document;
// MetadataPath+Path is the same document at the path-suffixed location the
// RFC derives from the resource URL.
const MetadataPath = "/.well-known/oauth-protected-resource"

// Prefixes are the public path prefixes of the MCP service.
var Prefixes = []string{Path, MetadataPath}

// OpenRoutes answer without credentials: the metadata document.
var OpenRoutes = []string{"GET " + MetadataPath, "GET " + MetadataPath + Path}

// identityKey is where the HTTP handler puts the caller's identity in the
// SDK's per-request token info.
const identityKey = "dotdo.identity"

// HTTPOptions configure the Streamable HTTP endpoint.
type HTTPOptions struct {
	// PublicURL is the gateway's public URL (https://api.example.com): the
	// resource is PublicURL+/mcp, its origin is allowed.
	PublicURL string
	// AllowedOrigins are more browser origins (scheme://host[:port]) that
	// may call /mcp. A request with any other Origin header gets 403:
	// that is the defence against DNS rebinding the MCP transport spec
	// asks for. Requests without Origin (non-browser clients) pass.
	AllowedOrigins []string
}

// ResourceMetadataURL is the URL of the metadata document for publicURL.
func ResourceMetadataURL(publicURL string) string {
	return strings.TrimSuffix(publicURL, "/") + MetadataPath
}

// Routes registers /mcp and the metadata document on mux. The gateway has
// authenticated the request and put the identity in its context; /mcp
// refuses requests without one, with the RFC 9728 challenge.
func (s *Server) Routes(mux *http.ServeMux, o HTTPOptions) {
	pub := strings.TrimSuffix(o.PublicURL, "/")
	origins := []string{}
	if u, err := url.Parse(pub); err == nil && u.Host != "" {
		origins = append(origins, strings.ToLower(u.Scheme+"://"+u.Host))
	}
	for _, a := range o.AllowedOrigins {
		origins = append(origins, strings.ToLower(strings.TrimSuffix(a, "/")))
	}
	// Stateless: every request carries its own credential and any gateway
	// replica can answer it; dotdo's tools never call back to the client.
	h := sdk.NewStreamableHTTPHandler(func(*http.Request) *sdk.Server { return s.srv }, &sdk.StreamableHTTPOptions{
		Stateless: true,
		Logger:    s.log,
		// The Origin allowlist below covers DNS rebinding; the SDK's own
		// check would refuse a reverse proxy on the same machine that
		// forwards the public Host.
		DisableLocalhostProtection: true,
	})
	verify := func(ctx context.Context, _ string, r *http.Request) (*auth.TokenInfo, error) {
		id := identity.From(r.Context())
		if id == nil {
			return nil, auth.ErrInvalidToken
		}
		ti := &auth.TokenInfo{UserID: id.Kind + ":" + id.Subject, Extra: map[string]any{identityKey: id}}
		if id.ExpiresAt != 0 {
			ti.Expiration = time.Unix(id.ExpiresAt, 0)
		}
		return ti, nil
	}
	protected := auth.RequireBearerToken(verify, &auth.RequireBearerTokenOptions{ResourceMetadataURL: ResourceMetadataURL(pub), AllowMissingExpiration: true})(h)
	mux.Handle(Path, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if origin := r.Header.Get("Origin"); origin != "" && !slices.Contains(origins, strings.ToLower(origin)) {
			apierr.WriteHTTP(w, reqid.From(r.Context()), apierr.New(apierr.Forbidden, "origin %s may not call %s; allow it with --mcp-allowed-origins", origin, Path))
			return
		}
		protected.ServeHTTP(w, r)
	}))
	doc, _ := json.Marshal(map[string]any{
		"resource":                 pub + Path,
		"authorization_servers":    []string{pub},
		"bearer_methods_supported": []string{"header"},
		"resource_name":            "dotdo MCP server",
	})
	meta := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Access-Control-Allow-Origin", "*")
		w.Header().Set("Cache-Control", "public, max-age=3600")
		w.Write(doc)
	}
	for _, p := range OpenRoutes {
		mux.HandleFunc(p, meta)
	}
}
