package schedule

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/dotdo/dotdo/internal/netguard"
	"github.com/dotdo/dotdo/internal/queue"
)

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

// dialGuard refuses a connection to a loopback, private or reserved
// address: it runs after name resolution, on the address actually dialled.
func dialGuard(_ context.Context, network, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return err
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return fmt.Errorf("refused to connect to %q: not an IP address", host)
	}
	if !netguard.Public(ip) {
		return errRefused{ip}
	}
	return nil
}

// doHTTP makes the HTTP call of an http action. A response other than 2xx
// or 3xx is a failed attempt.
func (s *Service) doHTTP(ctx context.Context, r *runState, attempt int) (string, error) {
	a := r.t.pb.Action
	var body io.Reader
	if a.Body != "" {
		body = strings.NewReader(a.Body)
	}
	req, err := http.NewRequestWithContext(ctx, a.Method, a.Url, body)
	if err != nil {
		return "", fmt.Errorf("build request: %w", err)
	}
	for k, v := range a.Headers {
		v, err := s.openHeader(r.t.pb, k, v)
		if err != nil {
			return "", err
		}
		req.Header.Set(k, v)
	}
	if req.Header.Get("User-Agent") == "" {
		req.Header.Set("User-Agent", "dotdo-schedule/1")
	}
	if a.Body != "" && req.Header.Get("Content-Type") == "" {
		ct := "text/plain; charset=utf-8"
		if json.Valid([]byte(a.Body)) {
			ct = "application/json"
		}
		req.Header.Set("Content-Type", ct)
	}
	req.Header.Set("Dotdo-Schedule-Task", r.pb.Ns+"/"+r.pb.Task)
	req.Header.Set("Dotdo-Schedule-Run", r.pb.Id)
	req.Header.Set("Dotdo-Schedule-Time", fromMicros(r.pb.ScheduledAt).Format(time.RFC3339Nano))
	req.Header.Set("Dotdo-Schedule-Attempt", strconv.Itoa(attempt))
	res, err := s.client.Do(req)
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", a.Method, redactURL(a.Url), unwrapURLError(err))
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(res.Body, 1000))
	io.Copy(io.Discard, io.LimitReader(res.Body, 1<<20))
	out := fmt.Sprintf("HTTP %d: %s", res.StatusCode, strings.ToValidUTF8(string(b), "?"))
	if res.StatusCode >= 400 {
		return out, fmt.Errorf("%s %s answered %d", a.Method, redactURL(a.Url), res.StatusCode)
	}
	return out, nil
}

// redactURL drops the query, which may hold a token, from URLs in errors.
func redactURL(u string) string {
	if i := strings.IndexAny(u, "?#"); i >= 0 {
		return u[:i]
	}
	return u
}

func unwrapURLError(err error) error {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return err
		}
		if _, isRefused := err.(errRefused); isRefused {
			return err
		}
		inner := u.Unwrap()
		if inner == nil {
			return err
		}
		if _, isRefused := inner.(errRefused); isRefused {
			return inner
		}
		if _, isOp := err.(*net.OpError); isOp {
			return err
		}
		err = inner
	}
}

// Queue adapts the queue engine to QueueSender: one message per run.
type Queue struct{ Q *queue.Service }

// SendMessage sends one message to the named queue and returns its id.
func (q Queue) SendMessage(ctx context.Context, name string, body []byte, contentType string) (string, error) {
	ids, err := q.Q.Send(ctx, name, queue.Outgoing{Body: body, ContentType: contentType})
	if err != nil {
		return "", err
	}
	return ids[0], nil
}
