package webhooks

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v82/webhook"
	svix "github.com/svix/svix-webhooks/go"
)

var now = time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)

type verifyCase struct {
	name    string
	header  http.Header
	body    []byte
	secrets []string
	want    error
}

func runVerify(t *testing.T, provider string, cases []verifyCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Verify(provider, tc.header, tc.body, tc.secrets, now)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Verify(%s) = %v; want %v", provider, err, tc.want)
			}
		})
	}
}

func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

func oneByteChanged(b []byte) []byte {
	c := append([]byte(nil), b...)
	c[len(c)/2] ^= 0x01
	return c
}

func TestVerifyStripe(t *testing.T) {
	body := []byte(`{"id":"evt_1","type":"invoice.paid","data":{"object":{"id":"in_1"}}}`)
	const secret, old = "whsec_current0123456789", "whsec_previous0123456789"
	signed := func(secret string, at time.Time, b []byte) http.Header {
		p := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: b, Secret: secret, Timestamp: at})
		return hdr("Stripe-Signature", p.Header)
	}
	// A header with two v1 signatures of which only the second is valid,
	// as Stripe sends during a secret roll.
	good := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: body, Secret: secret, Timestamp: now})
	bad := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: body, Secret: "whsec_other", Timestamp: now})
	twoSigs := fmt.Sprintf("t=%d,v1=%s,v1=%s", now.Unix(), hex.EncodeToString(bad.Signature), hex.EncodeToString(good.Signature))
	runVerify(t, Stripe, []verifyCase{
		{"valid", signed(secret, now, body), body, []string{secret}, nil},
		{"valid at the edge of the tolerance", signed(secret, now.Add(-StripeTolerance), body), body, []string{secret}, nil},
		{"body changed by one byte", signed(secret, now, body), oneByteChanged(body), []string{secret}, ErrNoSignature},
		{"wrong secret", signed("whsec_wrong", now, body), body, []string{secret}, ErrNoSignature},
		{"missing header", hdr(), body, []string{secret}, ErrMissingHeader},
		{"malformed header", hdr("Stripe-Signature", "garbage"), body, []string{secret}, ErrMalformedHeader},
		{"no v1", hdr("Stripe-Signature", fmt.Sprintf("t=%d,v0=abcd", now.Unix())), body, []string{secret}, ErrMalformedHeader},
		{"no timestamp", hdr("Stripe-Signature", "v1="+hex.EncodeToString(good.Signature)), body, []string{secret}, ErrMalformedHeader},
		{"stale timestamp", signed(secret, now.Add(-StripeTolerance-time.Second), body), body, []string{secret}, ErrTooOld},
		{"future timestamp", signed(secret, now.Add(StripeTolerance+time.Second), body), body, []string{secret}, ErrTooNew},
		{"rotation: second configured secret valid", signed(old, now, body), body, []string{secret, old}, nil},
		{"rotation: only the second signature valid", hdr("Stripe-Signature", twoSigs), body, []string{secret}, nil},
		{"no secret configured", signed(secret, now, body), body, nil, ErrNoSecret},
	})
}

// githubSig signs as GitHub documents it: sha256= hex HMAC of the body.
func githubSig(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

func TestVerifyGitHub(t *testing.T) {
	// GitHub's documented test vector ("Validating webhook deliveries").
	const docSecret = "It's a Secret to Everybody"
	docBody := []byte("Hello, World!")
	const docSig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
	if got := githubSig(docSecret, docBody); got != docSig {
		t.Fatalf("githubSig = %s; want GitHub's documented %s", got, docSig)
	}
	body := []byte(`{"action":"opened","repository":{"id":1}}`)
	const secret, old = "gh-current", "gh-previous"
	runVerify(t, GitHub, []verifyCase{
		{"documented vector", hdr("X-Hub-Signature-256", docSig), docBody, []string{docSecret}, nil},
		{"valid", hdr("X-Hub-Signature-256", githubSig(secret, body)), body, []string{secret}, nil},
		{"body changed by one byte", hdr("X-Hub-Signature-256", githubSig(secret, body)), oneByteChanged(body), []string{secret}, ErrNoSignature},
		{"wrong secret", hdr("X-Hub-Signature-256", githubSig("nope", body)), body, []string{secret}, ErrNoSignature},
		{"missing header", hdr(), body, []string{secret}, ErrMissingHeader},
		{"malformed header", hdr("X-Hub-Signature-256", "sha256=xyz"), body, []string{secret}, ErrMalformedHeader},
		{"sha1 scheme in the sha256 header", hdr("X-Hub-Signature-256", "sha1=0123456789012345678901234567890123456789"), body, []string{secret}, ErrMalformedHeader},
		{"SHA-1 only", hdr("X-Hub-Signature", "sha1="+sha1Hex(secret, body)), body, []string{secret}, ErrSHA1Only},
		{"rotation: second configured secret valid", hdr("X-Hub-Signature-256", githubSig(old, body)), body, []string{secret, old}, nil},
	})
}

func workosSig(secret string, ms int64, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	fmt.Fprintf(m, "%d.%s", ms, body)
	return fmt.Sprintf("t=%d, v1=%s", ms, hex.EncodeToString(m.Sum(nil)))
}

func TestVerifyWorkOS(t *testing.T) {
	body := []byte(`{"id":"event_01","event":"dsync.user.created","data":{}}`)
	const secret, old = "wos-current", "wos-previous"
	ms := now.UnixMilli()
	runVerify(t, WorkOS, []verifyCase{
		{"valid", hdr("WorkOS-Signature", workosSig(secret, ms, body)), body, []string{secret}, nil},
		{"valid without the space", hdr("WorkOS-Signature", fmt.Sprintf("t=%d,v1=%s", ms, workosSig(secret, ms, body)[len(fmt.Sprintf("t=%d, v1=", ms)):])), body, []string{secret}, nil},
		{"body changed by one byte", hdr("WorkOS-Signature", workosSig(secret, ms, body)), oneByteChanged(body), []string{secret}, ErrNoSignature},
		{"wrong secret", hdr("WorkOS-Signature", workosSig("nope", ms, body)), body, []string{secret}, ErrNoSignature},
		{"missing header", hdr(), body, []string{secret}, ErrMissingHeader},
		{"malformed header", hdr("WorkOS-Signature", "t=abc, v1=00"), body, []string{secret}, ErrMalformedHeader},
		{"stale timestamp", hdr("WorkOS-Signature", workosSig(secret, ms-181_000, body)), body, []string{secret}, ErrTooOld},
		{"future timestamp", hdr("WorkOS-Signature", workosSig(secret, ms+181_000, body)), body, []string{secret}, ErrTooNew},
		{"milliseconds: within 180 s in ms is fine", hdr("WorkOS-Signature", workosSig(secret, ms-179_000, body)), body, []string{secret}, nil},
		// A timestamp in seconds read as milliseconds is 1970: a sender
		// that got the unit wrong is refused, not accepted by accident.
		{"milliseconds: seconds are refused", hdr("WorkOS-Signature", workosSig(secret, now.Unix(), body)), body, []string{secret}, ErrTooOld},
		{"rotation: second configured secret valid", hdr("WorkOS-Signature", workosSig(old, ms, body)), body, []string{secret, old}, nil},
	})
}

func svixSigned(t *testing.T, secret, id string, at time.Time, body []byte) http.Header {
	t.Helper()
	wh, err := svix.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := wh.Sign(id, at, body)
	if err != nil {
		t.Fatal(err)
	}
	return hdr("svix-id", id, "svix-timestamp", strconv.FormatInt(at.Unix(), 10), "svix-signature", sig)
}

func TestVerifyResendSvix(t *testing.T) {
	body := []byte(`{"type":"email.delivered","created_at":"2026-11-28T12:00:00Z","data":{"email_id":"e1"}}`)
	secret := "whsec_" + base64.StdEncoding.EncodeToString([]byte("current-secret-0123456789abcdef"))
	old := "whsec_" + base64.StdEncoding.EncodeToString([]byte("previous-secret-0123456789abcde"))
	other := "whsec_" + base64.StdEncoding.EncodeToString([]byte("someone-else-0123456789abcdefgh"))
	valid := svixSigned(t, secret, "msg_1", now, body)
	rot := svixSigned(t, other, "msg_1", now, body)
	rot.Set("svix-signature", rot.Get("svix-signature")+" "+valid.Get("svix-signature"))
	std := hdr("webhook-id", "msg_1", "webhook-timestamp", valid.Get("svix-timestamp"), "webhook-signature", valid.Get("svix-signature"))
	changedID := svixSigned(t, secret, "msg_1", now, body)
	changedID.Set("svix-id", "msg_2")
	runVerify(t, Resend, []verifyCase{
		{"valid", valid, body, []string{secret}, nil},
		{"valid with webhook-* headers", std, body, []string{secret}, nil},
		{"body changed by one byte", valid, oneByteChanged(body), []string{secret}, ErrNoSignature},
		{"id changed", changedID, body, []string{secret}, ErrNoSignature},
		{"wrong secret", svixSigned(t, other, "msg_1", now, body), body, []string{secret}, ErrNoSignature},
		{"missing headers", hdr(), body, []string{secret}, ErrMissingHeader},
		{"missing signature", hdr("svix-id", "msg_1", "svix-timestamp", "1"), body, []string{secret}, ErrMissingHeader},
		{"malformed signature", hdr("svix-id", "msg_1", "svix-timestamp", valid.Get("svix-timestamp"), "svix-signature", "garbage"), body, []string{secret}, ErrMalformedHeader},
		{"malformed timestamp", hdr("svix-id", "msg_1", "svix-timestamp", "soon", "svix-signature", valid.Get("svix-signature")), body, []string{secret}, ErrMalformedHeader},
		{"stale timestamp", svixSigned(t, secret, "msg_1", now.Add(-SvixTolerance-time.Second), body), body, []string{secret}, ErrTooOld},
		{"future timestamp", svixSigned(t, secret, "msg_1", now.Add(SvixTolerance+time.Second), body), body, []string{secret}, ErrTooNew},
		{"rotation: only the second signature valid", rot, body, []string{secret}, nil},
		{"rotation: second configured secret valid", svixSigned(t, old, "msg_1", now, body), body, []string{secret, old}, nil},
	})
}

// TestSignSvixMatchesLibrary checks the outbound signer against the svix
// library's own Sign and Verify.
func TestSignSvixMatchesLibrary(t *testing.T) {
	secret := "whsec_" + base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	body := []byte(`{"type":"thing.created","timestamp":"2026-11-28T12:00:00Z","data":{}}`)
	got, err := SignSvix(secret, "msg_x", now.Unix(), body)
	if err != nil {
		t.Fatal(err)
	}
	wh, _ := svix.NewWebhook(secret)
	want, _ := wh.Sign("msg_x", now, body)
	if got != want {
		t.Fatalf("SignSvix = %s; want %s (svix)", got, want)
	}
	h := hdr("webhook-id", "msg_x", "webhook-timestamp", strconv.FormatInt(time.Now().Unix(), 10))
	sig, _ := SignSvix(secret, "msg_x", time.Now().Unix(), body)
	h.Set("webhook-signature", sig)
	if err := wh.Verify(body, h); err != nil {
		t.Fatalf("svix Verify of our signature: %v", err)
	}
}
