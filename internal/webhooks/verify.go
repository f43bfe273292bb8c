package webhooks

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The providers dotdo verifies.
const (
	Stripe = "stripe"
	GitHub = "github"
	WorkOS = "workos"
	Resend = "resend"
)

// Providers lists the providers in a stable order.
var Providers = []string{Stripe, GitHub, WorkOS, Resend}

// Tolerances of the providers' signed timestamps. A timestamp further in
// the past than the tolerance is a replay; one further in the future is
// refused too, so a stolen signature cannot be kept for later.
const (
	StripeTolerance = 300 * time.Second
	WorkOSTolerance = 180 * time.Second
	SvixTolerance   = 5 * time.Minute
)

// Rejection reasons, recorded on the rejected request and returned to the
// caller. They say what was wrong, never what was expected.
var (
	ErrMissingHeader   = errors.New("signature header missing")
	ErrMalformedHeader = errors.New("signature header malformed")
	ErrNoSignature     = errors.New("no signature matches")
	ErrTooOld          = errors.New("signature timestamp too old")
	ErrTooNew          = errors.New("signature timestamp too far in the future")
	ErrNoSecret        = errors.New("no secret configured for this provider")
	ErrSHA1Only        = errors.New("only the legacy SHA-1 signature was sent; X-Hub-Signature-256 is required")
)

// Signed is what a verified request proved: when it was signed (zero for
// GitHub, which signs no timestamp).
type Signed struct {
	Timestamp time.Time
}

// Verify checks the request's signature for provider over the raw body
// with each of secrets (any may match: rotation), at time now. It returns
// one of the Err values above on failure.
func Verify(provider string, h http.Header, body []byte, secrets []string, now time.Time) (Signed, error) {
	if len(secrets) == 0 {
		return Signed{}, ErrNoSecret
	}
	switch provider {
	case Stripe:
		return verifyStripe(h, body, secrets, now)
	case GitHub:
		return verifyGitHub(h, body, secrets)
	case WorkOS:
		return verifyWorkOS(h, body, secrets, now)
	case Resend:
		return verifySvix(h, body, secrets, now)
	}
	return Signed{}, errors.New("unknown provider")
}

func mac(key []byte, parts ...[]byte) []byte {
	m := hmac.New(sha256.New, key)
	for _, p := range parts {
		m.Write(p)
	}
	return m.Sum(nil)
}

// window checks ts against now within tol either way.
func window(ts, now time.Time, tol time.Duration) error {
	if now.Sub(ts) > tol {
		return ErrTooOld
	}
	if ts.Sub(now) > tol {
		return ErrTooNew
	}
	return nil
}

// anyEqual compares want with every candidate in constant time per pair,
// and looks at all of them so the time does not tell which one matched.
func anyEqual(want []byte, candidates [][]byte) bool {
	ok := false
	for _, c := range candidates {
		if hmac.Equal(want, c) {
			ok = true
		}
	}
	return ok
}

// StripeHeader is a parsed Stripe-Signature header.
type StripeHeader struct {
	Timestamp int64
	V1        [][]byte
}

// ParseStripeHeader reads "t=<unix s>,v1=<hex>[,v1=<hex>...]". Other
// schemes (v0) are skipped; a v1 that is not 32 bytes of hex cannot match
// and is skipped too. It needs exactly one t and at least one usable v1.
func ParseStripeHeader(v string) (StripeHeader, error) {
	var out StripeHeader
	seenT := false
	for _, item := range strings.Split(v, ",") {
		k, val, ok := strings.Cut(strings.TrimSpace(item), "=")
		if !ok {
			return StripeHeader{}, ErrMalformedHeader
		}
		switch k {
		case "t":
			if seenT {
				return StripeHeader{}, ErrMalformedHeader
			}
			n, err := parseDigits(val)
			if err != nil {
				return StripeHeader{}, ErrMalformedHeader
			}
			out.Timestamp, seenT = n, true
		case "v1":
			if b, err := hex.DecodeString(val); err == nil && len(b) == sha256.Size {
				out.V1 = append(out.V1, b)
			}
		}
	}
	if !seenT || len(out.V1) == 0 {
		return StripeHeader{}, ErrMalformedHeader
	}
	return out, nil
}

// parseDigits reads a non-negative decimal integer of at most 18 digits.
func parseDigits(s string) (int64, error) {
	if len(s) == 0 || len(s) > 18 {
		return 0, ErrMalformedHeader
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, ErrMalformedHeader
		}
	}
	return strconv.ParseInt(s, 10, 64)
}

func verifyStripe(h http.Header, body []byte, secrets []string, now time.Time) (Signed, error) {
	v := h.Get("Stripe-Signature")
	if v == "" {
		return Signed{}, ErrMissingHeader
	}
	sh, err := ParseStripeHeader(v)
	if err != nil {
		return Signed{}, err
	}
	ts := time.Unix(sh.Timestamp, 0)
	t := []byte(strconv.FormatInt(sh.Timestamp, 10))
	ok := false
	for _, s := range secrets {
		// Stripe keys the HMAC with the whole whsec_ string.
		if anyEqual(mac([]byte(s), t, []byte("."), body), sh.V1) {
			ok = true
		}
	}
	if !ok {
		return Signed{}, ErrNoSignature
	}
	// The timestamp is checked after the signature so a forged request
	// learns nothing from which of the two failed.
	if err := window(ts, now, StripeTolerance); err != nil {
		return Signed{}, err
	}
	return Signed{Timestamp: ts}, nil
}

// ParseGitHubHeader reads X-Hub-Signature-256: "sha256=<64 hex>".
func ParseGitHubHeader(v string) ([]byte, error) {
	hexsig, ok := strings.CutPrefix(strings.TrimSpace(v), "sha256=")
	if !ok || len(hexsig) != 2*sha256.Size {
		return nil, ErrMalformedHeader
	}
	b, err := hex.DecodeString(hexsig)
	if err != nil {
		return nil, ErrMalformedHeader
	}
	return b, nil
}

func verifyGitHub(h http.Header, body []byte, secrets []string) (Signed, error) {
	v := h.Get("X-Hub-Signature-256")
	if v == "" {
		if h.Get("X-Hub-Signature") != "" {
			return Signed{}, ErrSHA1Only
		}
		return Signed{}, ErrMissingHeader
	}
	sig, err := ParseGitHubHeader(v)
	if err != nil {
		return Signed{}, err
	}
	ok := false
	for _, s := range secrets {
		if hmac.Equal(mac([]byte(s), body), sig) {
			ok = true
		}
	}
	if !ok {
		return Signed{}, ErrNoSignature
	}
	return Signed{}, nil
}

// WorkOSHeader is a parsed WorkOS-Signature header.
type WorkOSHeader struct {
	TimestampMillis int64
	// TimestampText is t as sent: it is what was signed.
	TimestampText string
	V1            []byte
}

// ParseWorkOSHeader reads "t=<unix ms>, v1=<hex>" (a space after the comma
// is optional). Exactly one t and one v1 are required.
func ParseWorkOSHeader(v string) (WorkOSHeader, error) {
	var out WorkOSHeader
	seenT, seenV := false, false
	for _, item := range strings.Split(v, ",") {
		k, val, ok := strings.Cut(strings.TrimSpace(item), "=")
		if !ok {
			return WorkOSHeader{}, ErrMalformedHeader
		}
		switch k {
		case "t":
			n, err := parseDigits(val)
			if err != nil || seenT {
				return WorkOSHeader{}, ErrMalformedHeader
			}
			out.TimestampMillis, out.TimestampText, seenT = n, val, true
		case "v1":
			b, err := hex.DecodeString(val)
			if err != nil || len(b) != sha256.Size || seenV {
				return WorkOSHeader{}, ErrMalformedHeader
			}
			out.V1, seenV = b, true
		}
	}
	if !seenT || !seenV {
		return WorkOSHeader{}, ErrMalformedHeader
	}
	return out, nil
}

func verifyWorkOS(h http.Header, body []byte, secrets []string, now time.Time) (Signed, error) {
	v := h.Get("WorkOS-Signature")
	if v == "" {
		return Signed{}, ErrMissingHeader
	}
	wh, err := ParseWorkOSHeader(v)
	if err != nil {
		return Signed{}, err
	}
	ok := false
	for _, s := range secrets {
		if hmac.Equal(mac([]byte(s), []byte(wh.TimestampText), []byte("."), body), wh.V1) {
			ok = true
		}
	}
	if !ok {
		return Signed{}, ErrNoSignature
	}
	ts := time.UnixMilli(wh.TimestampMillis)
	if err := window(ts, now, WorkOSTolerance); err != nil {
		return Signed{}, err
	}
	return Signed{Timestamp: ts}, nil
}

// ParseSvixSignatures reads "v1,<base64> [v1,<base64> ...]": the v1
// signatures, each 32 bytes. Other versions (v1a) are skipped; an entry
// that is not version,signature is malformed. At least one usable v1 is
// required.
func ParseSvixSignatures(v string) ([][]byte, error) {
	var out [][]byte
	for _, item := range strings.Fields(v) {
		ver, sig, ok := strings.Cut(item, ",")
		if !ok || ver == "" {
			return nil, ErrMalformedHeader
		}
		if ver != "v1" {
			continue
		}
		b, err := base64.StdEncoding.DecodeString(sig)
		if err != nil || len(b) != sha256.Size {
			continue
		}
		out = append(out, b)
	}
	if len(out) == 0 {
		return nil, ErrMalformedHeader
	}
	return out, nil
}

// ParseSvixTimestamp reads svix-timestamp (webhook-timestamp): Unix seconds.
func ParseSvixTimestamp(v string) (int64, error) {
	return parseDigits(strings.TrimSpace(v))
}

// SvixKey returns the HMAC key of a Svix / Standard Webhooks secret: the
// base64 after whsec_.
func SvixKey(secret string) ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil || len(b) == 0 {
		return nil, errors.New("a Svix secret is whsec_ followed by base64")
	}
	return b, nil
}

// svixHeaders returns the id, timestamp and signature headers, svix-*
// first, then the Standard Webhooks webhook-* names.
func svixHeaders(h http.Header) (id, ts, sig string) {
	id, ts, sig = h.Get("svix-id"), h.Get("svix-timestamp"), h.Get("svix-signature")
	if id == "" && ts == "" && sig == "" {
		id, ts, sig = h.Get("webhook-id"), h.Get("webhook-timestamp"), h.Get("webhook-signature")
	}
	return id, ts, sig
}

// MaxSvixID bounds the svix-id header, which becomes part of a record id.
const MaxSvixID = 200

func verifySvix(h http.Header, body []byte, secrets []string, now time.Time) (Signed, error) {
	id, tsText, sigs := svixHeaders(h)
	if id == "" || tsText == "" || sigs == "" {
		return Signed{}, ErrMissingHeader
	}
	if len(id) > MaxSvixID {
		return Signed{}, ErrMalformedHeader
	}
	ts, err := ParseSvixTimestamp(tsText)
	if err != nil {
		return Signed{}, ErrMalformedHeader
	}
	got, err := ParseSvixSignatures(sigs)
	if err != nil {
		return Signed{}, err
	}
	signed := []byte(id + "." + strconv.FormatInt(ts, 10) + ".")
	ok := false
	for _, s := range secrets {
		key, err := SvixKey(s)
		if err != nil {
			continue
		}
		if anyEqual(mac(key, signed, body), got) {
			ok = true
		}
	}
	if !ok {
		return Signed{}, ErrNoSignature
	}
	t := time.Unix(ts, 0)
	if err := window(t, now, SvixTolerance); err != nil {
		return Signed{}, err
	}
	return Signed{Timestamp: t}, nil
}

// SignSvix signs a message the Standard Webhooks way with the whsec_
// secret: "v1,<base64>". Outbound deliveries use it.
func SignSvix(secret, id string, ts int64, body []byte) (string, error) {
	key, err := SvixKey(secret)
	if err != nil {
		return "", err
	}
	sig := mac(key, []byte(id+"."+strconv.FormatInt(ts, 10)+"."), body)
	return "v1," + base64.StdEncoding.EncodeToString(sig), nil
}
