package schedule

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"strings"

	schedulev1 "github.com/dotdo/dotdo/internal/gen/dotdo/schedule/v1"
)

// HTTP actions' header values often hold the receiver's credentials. With
// a secret key they are sealed at rest (AES-256-GCM, bound to the task
// and header name) and every API answer shows them as Redacted; a PUT
// that sends Redacted back keeps the stored value.

// Redacted stands for a header value in API answers.
const Redacted = "<redacted>"

const sealedPrefix = "enc:v1:"

func (s *Service) aead() (cipher.AEAD, error) {
	if len(s.cfg.SecretKey) != 32 {
		return nil, errors.New("no secret key")
	}
	block, err := aes.NewCipher(s.cfg.SecretKey)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

func headerAAD(ns, name, header string) []byte {
	return []byte(ns + "/" + name + "/" + strings.ToLower(header))
}

// sealHeaders seals pb's header values in place, keeping values already
// sealed; without a key they stay as given.
func (s *Service) sealHeaders(pb *schedulev1.Task) error {
	a := pb.GetAction()
	if a == nil || len(a.Headers) == 0 || len(s.cfg.SecretKey) == 0 {
		return nil
	}
	g, err := s.aead()
	if err != nil {
		return err
	}
	for k, v := range a.Headers {
		if strings.HasPrefix(v, sealedPrefix) {
			continue
		}
		nonce := make([]byte, g.NonceSize())
		rand.Read(nonce)
		a.Headers[k] = sealedPrefix + base64.RawStdEncoding.EncodeToString(g.Seal(nonce, nonce, []byte(v), headerAAD(pb.Ns, pb.Name, k)))
	}
	return nil
}

// openHeader returns a header value as sent.
func (s *Service) openHeader(pb *schedulev1.Task, k, v string) (string, error) {
	if !strings.HasPrefix(v, sealedPrefix) {
		return v, nil
	}
	g, err := s.aead()
	if err != nil {
		return "", errors.New("the task's headers are sealed with a secret key this schedule replica lacks: give every replica the same DOTDO_SECRET_KEY")
	}
	b, err := base64.RawStdEncoding.DecodeString(strings.TrimPrefix(v, sealedPrefix))
	if err != nil || len(b) < g.NonceSize() {
		return "", errors.New("a sealed header value is corrupt")
	}
	out, err := g.Open(nil, b[:g.NonceSize()], b[g.NonceSize():], headerAAD(pb.Ns, pb.Name, k))
	if err != nil {
		return "", errors.New("a sealed header value does not open with this replica's secret key")
	}
	return string(out), nil
}

// keepRedacted puts back the stored value of every header the caller
// sent as Redacted (it read the task and wrote it back).
func keepRedacted(pb, cur *schedulev1.Task) error {
	a := pb.GetAction()
	if a == nil {
		return nil
	}
	for k, v := range a.Headers {
		if v != Redacted {
			continue
		}
		old, ok := cur.GetAction().GetHeaders()[k]
		if !ok || cur.GetAction().GetUrl() != a.Url {
			return invalid("action.headers: %s is %s but the stored task has no value to keep for this URL; send the value", k, Redacted)
		}
		a.Headers[k] = old
	}
	return nil
}

// redact returns pb's action with header values hidden.
func redactHeaders(a *schedulev1.Action) map[string]string {
	if len(a.GetHeaders()) == 0 {
		return nil
	}
	out := make(map[string]string, len(a.Headers))
	for k := range a.Headers {
		out[k] = Redacted
	}
	return out
}
