package dispatch

import (
	"encoding/json"
	"slices"
	"strings"
	"time"

	"github.com/dotdo/dotdo/internal/apierr"
)

// Namespace is the system namespace that holds the dispatch service's
// state: dispatch namespaces, scripts, versions and module bytes.
const Namespace = "_dispatch"

// Thing types in Namespace.
const (
	typeNamespace = "DispatchNamespace"
	typeScript    = "Script"
	typeVersion   = "ScriptVersion"
	typeChunk     = "ModuleChunk"
	typeHost      = "HostRoute"
)

// Limits bound one request to a script. Zero fields take the namespace's
// value, and a namespace's zero fields take the service defaults.
type Limits struct {
	// WallMS is the wall-clock time a request may run, in milliseconds.
	WallMS int `json:"wallMs,omitempty"`
	// MemoryMB is the most linear memory an instance may have.
	MemoryMB int `json:"memoryMb,omitempty"`
	// Subrequests is how many host calls (fetch, things) a request may make.
	Subrequests int `json:"subrequests,omitempty"`
	// ResponseBytes caps what the script writes to stdout.
	ResponseBytes int64 `json:"responseBytes,omitempty"`
}

// within returns l with zero fields filled from outer, refusing any field
// larger than outer's.
func (l Limits) within(outer Limits, what string) (Limits, error) {
	out := outer
	check := func(field string, v, max int64, set func()) error {
		if v < 0 {
			return apierr.New(apierr.Invalid, "%s limit %s must not be negative", what, field)
		}
		if v == 0 {
			return nil
		}
		if v > max {
			return apierr.New(apierr.Invalid, "%s limit %s = %d is above the allowed %d", what, field, v, max)
		}
		set()
		return nil
	}
	if err := check("wallMs", int64(l.WallMS), int64(outer.WallMS), func() { out.WallMS = l.WallMS }); err != nil {
		return out, err
	}
	if err := check("memoryMb", int64(l.MemoryMB), int64(outer.MemoryMB), func() { out.MemoryMB = l.MemoryMB }); err != nil {
		return out, err
	}
	if err := check("subrequests", int64(l.Subrequests), int64(outer.Subrequests), func() { out.Subrequests = l.Subrequests }); err != nil {
		return out, err
	}
	if err := check("responseBytes", l.ResponseBytes, outer.ResponseBytes, func() { out.ResponseBytes = l.ResponseBytes }); err != nil {
		return out, err
	}
	return out, nil
}

// Outbound modes.
const (
	OutboundNone      = "none"
	OutboundAllowlist = "allowlist"
	OutboundHandler   = "handler"
)

// Outbound is a namespace's policy for fetches made by its scripts.
type Outbound struct {
	// Mode is none (no egress), allowlist (only Allow's hosts) or handler
	// (every fetch is sent to Handler, which forwards, rewrites or refuses
	// it).
	Mode string `json:"mode"`
	// Allow lists host names (example.com, or *.example.com for its
	// subdomains), optionally with :port.
	Allow []string `json:"allow,omitempty"`
	// Handler is the URL of the outbound handler.
	Handler string `json:"handler,omitempty"`
}

// Access values of a namespace.
const (
	AccessPublic  = "public"
	AccessPrivate = "private"
)

// NamespaceInfo is a dispatch namespace.
type NamespaceInfo struct {
	Name string `json:"name"`
	// Access is public (anyone may call its scripts) or private (callers
	// need dispatch:invoke on the namespace, on the path route).
	Access    string   `json:"access"`
	Limits    Limits   `json:"limits"`
	Outbound  Outbound `json:"outbound"`
	CreatedAt string   `json:"createdAt,omitempty"`
	UpdatedAt string   `json:"updatedAt,omitempty"`
}

// Version is one deployed version of a script.
type Version struct {
	Version   int               `json:"version"`
	SHA256    string            `json:"sha256"`
	Size      int               `json:"size"`
	Chunks    int               `json:"chunks"`
	Tags      []string          `json:"tags"`
	Env       map[string]string `json:"env,omitempty"`
	Limits    Limits            `json:"limits"`
	CreatedAt string            `json:"createdAt"`
	CreatedBy string            `json:"createdBy,omitempty"`
}

// Script is a script in a namespace with its current version.
type Script struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Current is the version that serves requests.
	Current Version `json:"current"`
	// History lists the versions rollback goes back through, oldest first;
	// the last is Current.
	History []int `json:"history"`
	// Stored lists every version whose record and module are kept.
	Stored []int `json:"stored"`
	// Hosts are custom host names that reach the script.
	Hosts     []string `json:"hosts,omitempty"`
	Next      int      `json:"nextVersion"`
	CreatedAt string   `json:"createdAt"`
	UpdatedAt string   `json:"updatedAt"`
}

// Metadata is what a deploy carries beside the module.
type Metadata struct {
	Tags   []string          `json:"tags"`
	Env    map[string]string `json:"env"`
	Limits Limits            `json:"limits"`
	// Hosts, when given, replaces the script's custom host names (at most
	// 8, each claimed by one script only); when absent they stay.
	Hosts *[]string `json:"hosts,omitempty"`
}

// MaxTags is how many tags a script may have.
const MaxTags = 8

// MaxVersions is how many versions of a script are kept for rollback.
const MaxVersions = 10

func (m *Metadata) validate() error {
	if len(m.Tags) > MaxTags {
		return apierr.New(apierr.Invalid, "a script has at most %d tags; got %d", MaxTags, len(m.Tags))
	}
	seen := map[string]bool{}
	for _, t := range m.Tags {
		if !validTag(t) {
			return apierr.New(apierr.Invalid, "tag %q is invalid: use 1-64 characters of a-z, A-Z, 0-9, '-', '_', '.' and ':'", clip(t))
		}
		if seen[t] {
			return apierr.New(apierr.Invalid, "tag %q is given twice", t)
		}
		seen[t] = true
	}
	if m.Hosts != nil {
		if len(*m.Hosts) > MaxTags {
			return apierr.New(apierr.Invalid, "a script has at most %d custom host names", MaxTags)
		}
		seen := map[string]bool{}
		for i, h := range *m.Hosts {
			h = strings.ToLower(strings.TrimSuffix(h, "."))
			if !validHostName(h) {
				return apierr.New(apierr.Invalid, "host %q is not a host name such as app.example.com", clip(h))
			}
			if seen[h] {
				return apierr.New(apierr.Invalid, "host %s is given twice", h)
			}
			seen[h] = true
			(*m.Hosts)[i] = h
		}
	}
	if len(m.Env) > 64 {
		return apierr.New(apierr.Invalid, "a script has at most 64 environment variables")
	}
	for k, v := range m.Env {
		if !validEnvName(k) {
			return apierr.New(apierr.Invalid, "environment variable name %q is invalid: use A-Z, a-z, 0-9 and '_', not starting with a digit", clip(k))
		}
		if isCGIName(k) {
			return apierr.New(apierr.Invalid, "environment variable %s is set by the dispatcher for each request", k)
		}
		if len(v) > 4096 || strings.IndexByte(v, 0) >= 0 {
			return apierr.New(apierr.Invalid, "environment variable %s: values are at most 4096 bytes without NUL", k)
		}
	}
	return nil
}

func validTag(t string) bool {
	if len(t) == 0 || len(t) > 64 {
		return false
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-_.:", c) >= 0) {
			return false
		}
	}
	return true
}

// validHostName reports whether h is a DNS name of at least two labels.
func validHostName(h string) bool {
	if len(h) == 0 || len(h) > 253 {
		return false
	}
	labels := strings.Split(h, ".")
	if len(labels) < 2 || strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		return false // one label, or an IP address
	}
	for _, l := range labels {
		if !validName(l) {
			return false
		}
	}
	return true
}

func validEnvName(k string) bool {
	if len(k) == 0 || len(k) > 128 || k[0] >= '0' && k[0] <= '9' {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// isCGIName reports whether the dispatcher sets k itself.
func isCGIName(k string) bool {
	switch k {
	case "REQUEST_METHOD", "PATH_INFO", "QUERY_STRING", "SCRIPT_NAME", "SERVER_NAME", "SERVER_PORT",
		"SERVER_PROTOCOL", "SERVER_SOFTWARE", "GATEWAY_INTERFACE", "CONTENT_TYPE", "CONTENT_LENGTH",
		"REMOTE_ADDR", "REQUEST_ID", "X_MATCHED_ROUTE", "DOTDO_NAMESPACE", "DOTDO_SCRIPT", "DOTDO_VERSION":
		return true
	}
	return strings.HasPrefix(k, "HTTP_")
}

// validName reports whether s can name a script or a dispatch namespace:
// a DNS label (1-63 of a-z, 0-9 and '-', not starting or ending with '-'),
// so that <script>.<namespace>.<domain> is a host name.
func validName(s string) bool {
	if len(s) == 0 || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

func checkName(kind, s string) error {
	if !validName(s) {
		return apierr.New(apierr.Invalid, "%s name %q is invalid: use 1-63 characters of a-z, 0-9 and '-', not starting or ending with '-'", kind, clip(s))
	}
	return nil
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

func hasAllTags(have, want []string) bool {
	for _, t := range want {
		if !slices.Contains(have, t) {
			return false
		}
	}
	return true
}

func now() string { return time.Now().UTC().Format(time.RFC3339Nano) }

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// Thing IDs in Namespace.
func nsID(ns string) string           { return "ns:" + ns }
func scriptID(ns, name string) string { return "script:" + ns + ":" + name }
func versionID(ns, name string, v int) string {
	return "ver:" + ns + ":" + name + ":" + itoa(v)
}
func hostID(host string) string { return "host:" + host }
func chunkID(ns, name, sha string, i int) string {
	return "chunk:" + ns + ":" + name + ":" + sha + ":" + itoa(i)
}
