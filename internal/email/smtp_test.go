package email

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"io"
	"math/big"
	"mime"
	"mime/multipart"
	"net"
	"net/mail"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// smtpServer is an in-process SMTP server (github.com/emersion/go-smtp)
// that keeps what it receives.
type smtpServer struct {
	mu       sync.Mutex
	received []received
	// failRcpt answers RCPT for addresses containing a key with its error.
	failRcpt map[string]*smtp.SMTPError
	authed   []string
}

type received struct {
	from string
	rcpt []string
	data []byte
}

type smtpSession struct {
	srv  *smtpServer
	cur  received
	auth bool
}

func (s *smtpSession) AuthMechanisms() []string { return []string{sasl.Plain} }

func (s *smtpSession) Auth(mech string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(identity, username, password string) error {
		if username != "mailer" || password != "s3cret" {
			return errors.New("invalid credentials")
		}
		s.auth = true
		s.srv.mu.Lock()
		s.srv.authed = append(s.srv.authed, username)
		s.srv.mu.Unlock()
		return nil
	}), nil
}

func (s *smtpSession) Mail(from string, opts *smtp.MailOptions) error {
	if !s.auth {
		return smtp.ErrAuthRequired
	}
	s.cur = received{from: from}
	return nil
}

func (s *smtpSession) Rcpt(to string, opts *smtp.RcptOptions) error {
	s.srv.mu.Lock()
	defer s.srv.mu.Unlock()
	for k, e := range s.srv.failRcpt {
		if strings.Contains(to, k) {
			return e
		}
	}
	s.cur.rcpt = append(s.cur.rcpt, to)
	return nil
}

func (s *smtpSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.cur.data = b
	s.srv.mu.Lock()
	s.srv.received = append(s.srv.received, s.cur)
	s.srv.mu.Unlock()
	return nil
}

func (s *smtpSession) Reset()        { s.cur = received{} }
func (s *smtpSession) Logout() error { return nil }

// selfSigned returns a certificate for 127.0.0.1 and a pool trusting it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pool
}

// startSMTP serves on a loopback port with STARTTLS, or implicit TLS.
func startSMTP(t *testing.T, implicit bool) (*smtpServer, int, *x509.CertPool) {
	t.Helper()
	cert, pool := selfSigned(t)
	srv := &smtpServer{failRcpt: map[string]*smtp.SMTPError{}}
	s := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) { return &smtpSession{srv: srv}, nil }))
	s.Domain = "mx.test"
	s.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
	s.ReadTimeout, s.WriteTimeout = 10*time.Second, 10*time.Second
	var l net.Listener
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if implicit {
		l = tls.NewListener(l, s.TLSConfig)
	}
	go s.Serve(l)
	t.Cleanup(func() { s.Close() })
	return srv, l.Addr().(*net.TCPAddr).Port, pool
}

func (s *smtpServer) messages() []received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.received)
}

func TestSMTPEndToEnd(t *testing.T) {
	for _, implicit := range []bool{false, true} {
		name := map[bool]string{false: "starttls", true: "tls"}[implicit]
		t.Run(name, func(t *testing.T) {
			srv, port, pool := startSMTP(t, implicit)
			e := newEnv(t, "sqlite", Config{Provider: "smtp", SMTP: SMTPConfig{Host: "127.0.0.1", Port: port, Username: "mailer", Password: "s3cret",
				Security: name, TLSConfig: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}, Timeout: 10 * time.Second}})
			pdf := bytes.Repeat([]byte("%PDF-1.4 ünïcødé \x00\x01\x02"), 500)
			in := &Input{
				From: "Zoë Ñandú <zoe@acme.test>", To: Addresses{"José Müller <jose@x.test>", "ann@x.test"}, Cc: Addresses{"cc@x.test"}, Bcc: Addresses{"hidden@x.test"},
				ReplyTo: Addresses{"support@acme.test"}, Subject: "Grüße aus Köln — café ☕", Text: "Hallo José,\nschöne Grüße.", HTML: "<p>Hallo José, <b>schöne</b> Grüße.</p>",
				Headers:     map[string]string{"X-Campaign": "autumn"},
				Attachments: []InAttachment{{Filename: "rechnung.pdf", Content: base64.StdEncoding.EncodeToString(pdf), ContentType: "application/pdf"}},
			}
			res, err := e.s.SendEmail(context.Background(), in, Options{})
			if err != nil {
				t.Fatal(err)
			}
			v := e.waitStatus(t, res.ID, StatusSent, StatusFailed)
			if v.Status != StatusSent {
				t.Fatalf("status %s error %q; want sent", v.Status, v.Error)
			}
			msgs := srv.messages()
			if len(msgs) != 1 {
				t.Fatalf("server received %d messages; want 1", len(msgs))
			}
			got := msgs[0]
			// Envelope: bcc is a recipient of the envelope, not of the headers.
			if got.from != "zoe@acme.test" || !slices.Equal(got.rcpt, []string{"jose@x.test", "ann@x.test", "cc@x.test", "hidden@x.test"}) {
				t.Errorf("envelope = %q -> %q", got.from, got.rcpt)
			}
			m, err := mail.ReadMessage(bytes.NewReader(got.data))
			if err != nil {
				t.Fatal(err)
			}
			dec := new(mime.WordDecoder)
			subj, _ := dec.DecodeHeader(m.Header.Get("Subject"))
			if subj != in.Subject {
				t.Errorf("Subject = %q; want %q", subj, in.Subject)
			}
			from, err := mail.ParseAddress(m.Header.Get("From"))
			if err != nil || from.Name != "Zoë Ñandú" || from.Address != "zoe@acme.test" {
				t.Errorf("From = %q (%v); want Zoë Ñandú <zoe@acme.test>", m.Header.Get("From"), err)
			}
			to, err := m.Header.AddressList("To")
			if err != nil || len(to) != 2 || to[0].Name != "José Müller" || to[0].Address != "jose@x.test" {
				t.Errorf("To = %q (%v)", m.Header.Get("To"), err)
			}
			if m.Header.Get("Bcc") != "" {
				t.Errorf("Bcc header leaked: %q", m.Header.Get("Bcc"))
			}
			if m.Header.Get("Reply-To") != "<support@acme.test>" && m.Header.Get("Reply-To") != "support@acme.test" {
				t.Errorf("Reply-To = %q", m.Header.Get("Reply-To"))
			}
			if m.Header.Get("X-Campaign") != "autumn" || m.Header.Get("Message-Id") != "<"+res.ID+"@dotdo>" || m.Header.Get("Mime-Version") != "1.0" {
				t.Errorf("headers X-Campaign %q Message-Id %q MIME-Version %q", m.Header.Get("X-Campaign"), m.Header.Get("Message-Id"), m.Header.Get("Mime-Version"))
			}
			// multipart/mixed { multipart/alternative { text, html }, attachment }
			mt, params, _ := mime.ParseMediaType(m.Header.Get("Content-Type"))
			if mt != "multipart/mixed" {
				t.Fatalf("Content-Type = %s; want multipart/mixed", mt)
			}
			mr := multipart.NewReader(m.Body, params["boundary"])
			alt, err := mr.NextPart()
			if err != nil {
				t.Fatal(err)
			}
			at, aparams, _ := mime.ParseMediaType(alt.Header.Get("Content-Type"))
			if at != "multipart/alternative" {
				t.Fatalf("first part = %s; want multipart/alternative", at)
			}
			ar := multipart.NewReader(alt, aparams["boundary"])
			var bodies []string
			for {
				p, err := ar.NextPart()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(p) // quoted-printable is decoded by the reader
				ct, cp, _ := mime.ParseMediaType(p.Header.Get("Content-Type"))
				if cp["charset"] != "UTF-8" && cp["charset"] != "utf-8" {
					t.Errorf("%s charset = %q; want UTF-8", ct, cp["charset"])
				}
				bodies = append(bodies, ct+"|"+strings.ReplaceAll(string(b), "\r\n", "\n"))
			}
			if !slices.Equal(bodies, []string{"text/plain|" + in.Text, "text/html|" + in.HTML}) {
				t.Errorf("alternative parts = %q", bodies)
			}
			att, err := mr.NextPart()
			if err != nil {
				t.Fatal(err)
			}
			if ct, _, _ := mime.ParseMediaType(att.Header.Get("Content-Type")); ct != "application/pdf" || att.FileName() != "rechnung.pdf" {
				t.Errorf("attachment %s %q", ct, att.FileName())
			}
			raw, _ := io.ReadAll(att)
			content, err := base64.StdEncoding.DecodeString(strings.NewReplacer("\r", "", "\n", "").Replace(string(raw)))
			if err != nil || !bytes.Equal(content, pdf) {
				t.Errorf("attachment content differs (%d bytes, %v)", len(content), err)
			}
		})
	}
}

func TestSMTPFailures(t *testing.T) {
	srv, port, pool := startSMTP(t, false)
	srv.failRcpt["nobody"] = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
	srv.failRcpt["greylisted"] = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 1}, Message: "greylisted, try later"}
	e := newEnv(t, "sqlite", Config{Provider: "smtp", MaxAttempts: 2, SMTP: SMTPConfig{Host: "127.0.0.1", Port: port, Username: "mailer", Password: "s3cret",
		TLSConfig: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}}})
	ctx := context.Background()
	res, _ := e.s.SendEmail(ctx, simple("nobody@x.test"), Options{})
	v := e.waitStatus(t, res.ID, StatusFailed)
	if v.Attempts != 1 || !strings.Contains(v.Error, "550") {
		t.Errorf("5xx: attempts %d error %q; want a permanent failure after 1", v.Attempts, v.Error)
	}
	res, _ = e.s.SendEmail(ctx, simple("greylisted@x.test"), Options{})
	v = e.waitStatus(t, res.ID, StatusFailed)
	if v.Attempts != 2 || !strings.Contains(v.Error, "451") {
		t.Errorf("4xx: attempts %d error %q; want retried up to MaxAttempts (2)", v.Attempts, v.Error)
	}
	// Wrong credentials: nothing delivered.
	bad := NewSMTP(SMTPConfig{Host: "127.0.0.1", Port: port, Username: "mailer", Password: "wrong", TLSConfig: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}})
	if _, err := bad.Send(ctx, &Outgoing{ID: "x", From: "a@acme.test", To: []string{"b@x.test"}, Subject: "s", Text: "t"}); err == nil {
		t.Errorf("send with a wrong password succeeded")
	}
	if n := len(srv.messages()); n != 0 {
		t.Errorf("server received %d messages; want 0", n)
	}
}
