package auth_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"regexp"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/dotdo/dotdo/internal/apierr"
	"github.com/dotdo/dotdo/internal/auth"
	"github.com/dotdo/dotdo/internal/email"
	authv1 "github.com/dotdo/dotdo/internal/gen/dotdo/auth/v1"
	"github.com/dotdo/dotdo/internal/queue"
	"github.com/dotdo/dotdo/internal/testdb"
	"github.com/dotdo/dotdo/internal/thingsdb"
)

// flowEnv is an auth service with its email flows over a real email
// service (outbox), db and embedded queue.
type flowEnv struct {
	s     *auth.Service
	mail  *email.Service
	flows *auth.Flows
	clock *clock
}

func newFlowEnv(t *testing.T, backend string) *flowEnv {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	db, err := thingsdb.New(testdb.Open(t, backend), log)
	if err != nil {
		t.Fatal(err)
	}
	c := &clock{t: time.Now().UTC().Truncate(time.Second)}
	db.Now = c.Now
	s, err := auth.New(db, auth.Config{Issuer: "https://dotdo.test", SecretKey: bytes.Repeat([]byte{7}, 32),
		Password: auth.PasswordParams{MemoryKiB: 64, Time: 1, Threads: 1}}, log)
	if err != nil {
		t.Fatal(err)
	}
	s.Now = c.Now
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	q, err := queue.Open(ctx, queue.Config{Dir: t.TempDir()}, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	m, err := email.New(db, q, email.Config{From: "Acme <noreply@acme.test>"}, log)
	if err != nil {
		t.Fatal(err)
	}
	mctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	if err := m.Start(mctx); err != nil {
		t.Fatal(err)
	}
	return &flowEnv{s: s, mail: m, flows: auth.NewFlows(s, m, auth.FlowConfig{AppName: "Acme", LinkURL: "https://app.acme.test"}), clock: c}
}

var linkRE = regexp.MustCompile(`token=(ft_[0-9A-Za-z]+)`)

// lastToken returns the token in the newest email of flow to addr.
func (e *flowEnv) lastToken(t *testing.T, addr, flow string) (string, *email.View) {
	t.Helper()
	items, _, err := e.mail.ListEmails(ctx, auth.Namespace, email.Filter{To: addr, Tag: "flow=" + flow}, 1, "")
	if err != nil || len(items) == 0 {
		t.Fatalf("no %s email to %s (%v)", flow, addr, err)
	}
	v, err := e.mail.View(ctx, items[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	m := linkRE.FindStringSubmatch(v.Text)
	if m == nil {
		t.Fatalf("no token in %q", v.Text)
	}
	return m[1], v
}

func (e *flowEnv) user(t *testing.T, addr, password string) string {
	t.Helper()
	res, err := e.s.CreateUser(ctx, connect.NewRequest(&authv1.CreateUserRequest{Email: addr, Password: password}))
	if err != nil {
		t.Fatal(err)
	}
	return res.Msg.User.Id
}

func TestFlowTokenWorksOnceUnderConcurrency(t *testing.T) {
	for _, backend := range testdb.Backends() {
		t.Run(backend, func(t *testing.T) {
			e := newFlowEnv(t, backend)
			e.user(t, "ann@x.test", "first password")
			if err := e.flows.ForgotPassword(ctx, "ann@x.test", "", false); err != nil {
				t.Fatal(err)
			}
			tok, v := e.lastToken(t, "ann@x.test", "password-reset")
			if v.Subject != "Reset your Acme password" || v.Test || v.From != "Acme <noreply@acme.test>" {
				t.Errorf("reset email = subject %q test %v from %q", v.Subject, v.Test, v.From)
			}
			var wg sync.WaitGroup
			var mu sync.Mutex
			ok, refused := 0, 0
			for range 8 {
				wg.Go(func() {
					err := e.flows.ResetPassword(ctx, tok, "second password", "")
					mu.Lock()
					defer mu.Unlock()
					switch {
					case err == nil:
						ok++
					case apierr.Is(err, apierr.Unauthenticated):
						refused++
					default:
						t.Errorf("ResetPassword = %v", err)
					}
				})
			}
			wg.Wait()
			if ok != 1 || refused != 7 {
				t.Fatalf("8 concurrent resets with one token: %d ok, %d refused; want 1, 7", ok, refused)
			}
			if _, err := e.s.Login(ctx, connect.NewRequest(&authv1.LoginRequest{Email: "ann@x.test", Password: "second password"})); err != nil {
				t.Fatalf("login with the new password: %v", err)
			}
		})
	}
}

func TestFlowTokensExpire(t *testing.T) {
	e := newFlowEnv(t, "sqlite")
	e.user(t, "bob@x.test", "bob's password")
	if err := e.flows.SendMagicLink(ctx, "bob@x.test", "", true); err != nil {
		t.Fatal(err)
	}
	tok, v := e.lastToken(t, "bob@x.test", "magic-link")
	if !v.Test || v.Provider != "outbox" {
		t.Errorf("a test caller's magic link: test %v provider %s; want the outbox", v.Test, v.Provider)
	}
	e.clock.Advance(16 * time.Minute)
	if _, err := e.flows.MagicLogin(ctx, tok, "", ""); !apierr.Is(err, apierr.Unauthenticated) {
		t.Fatalf("magic link after 16 minutes = %v; want unauthenticated", err)
	}
}

func TestInviteFlow(t *testing.T) {
	e := newFlowEnv(t, "sqlite")
	u, err := e.flows.Invite(ctx, &authv1.CreateUserRequest{Email: "new@x.test", Name: "New"}, "boss@acme.test", false)
	if err != nil || u.Status != "invited" {
		t.Fatalf("Invite = %v, %v", u, err)
	}
	tok, v := e.lastToken(t, "new@x.test", "invite")
	if v.Subject != "boss@acme.test invited you to Acme" {
		t.Errorf("invite subject = %q", v.Subject)
	}
	if _, err := e.flows.Invite(ctx, &authv1.CreateUserRequest{Email: "new@x.test"}, "", false); !apierr.Is(err, apierr.Conflict) {
		t.Fatalf("inviting an existing address = %v; want conflict", err)
	}
	if _, err := e.flows.AcceptInvite(ctx, tok, "short", "", "", ""); !apierr.Is(err, apierr.Invalid) {
		t.Fatalf("accept with a short password = %v; want invalid", err)
	}
	tokens, err := e.flows.AcceptInvite(ctx, tok, "a long enough password", "Newt", "", "")
	if err != nil || tokens.AccessToken == "" {
		t.Fatalf("AcceptInvite = %v, %v", tokens, err)
	}
	got, _ := e.s.GetUser(ctx, connect.NewRequest(&authv1.GetUserRequest{Id: u.Id}))
	if got.Msg.User.Status != "active" || got.Msg.User.Name != "Newt" {
		t.Fatalf("user after accepting = %+v", got.Msg.User)
	}
	if ok, _ := e.flows.Verified(ctx, u.Id); !ok {
		t.Errorf("accepting an invitation verifies the address")
	}
	// Unknown or inactive addresses get no email, and the caller cannot tell.
	if err := e.flows.ForgotPassword(ctx, "ghost@x.test", "", false); err != nil {
		t.Fatal(err)
	}
	if items, _, _ := e.mail.ListEmails(ctx, auth.Namespace, email.Filter{To: "ghost@x.test"}, 10, ""); len(items) != 0 {
		t.Fatalf("an unknown address got %d emails", len(items))
	}
}
