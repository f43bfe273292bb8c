package schedule

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/dotdo/dotdo/internal/apierr"
	schedulev1 "github.com/dotdo/dotdo/internal/gen/dotdo/schedule/v1"
	"github.com/dotdo/dotdo/internal/netguard"
)

// Limits and defaults of a task, documented in docs/schedule.md.
const (
	DefaultTimeout       = time.Minute
	MaxTimeout           = time.Hour
	DefaultRetries       = 3
	MaxRetries           = 10
	DefaultRetryBackoff  = 10 * time.Second
	MaxBackoff           = time.Hour
	DefaultCatchUpWindow = time.Hour
	MaxCatchUpWindow     = 7 * 24 * time.Hour
	MaxJitter            = time.Hour
	MaxBodyBytes         = 64 << 10
	MaxHeaders           = 32
)

// task is a validated task with its parsed schedule and durations.
type task struct {
	pb       *schedulev1.Task
	version  int64
	sched    Schedule
	jitter   time.Duration
	timeout  time.Duration
	retries  int
	backoff  time.Duration
	window   time.Duration
	enabled  bool
	specHash string
}

func (t *task) key() string { return t.pb.Ns + "/" + t.pb.Name }

// validName reports whether s is a task or queue name: 1-63 characters of
// a-z, 0-9, '-' and '_', starting with a letter or digit.
func validName(s string) bool {
	if len(s) == 0 || len(s) > 63 || s[0] == '-' || s[0] == '_' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

func invalid(format string, args ...any) error { return apierr.New(apierr.Invalid, format, args...) }

func duration(field, v string, def, min, max time.Duration) (time.Duration, error) {
	if v == "" {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, invalid("%s %q is not a duration such as 30s or 5m", field, v)
	}
	if d < min || d > max {
		return 0, invalid("%s must be from %v to %v", field, min, max)
	}
	return d, nil
}

// compile validates pb and fills its defaults. allowPrivate lets HTTP
// actions call loopback and private addresses; hasQueue says whether the
// queue action is available.
func (s *Service) compile(pb *schedulev1.Task) (*task, error) {
	if !validName(pb.Name) {
		return nil, invalid("task name %q must be 1-63 characters of a-z, 0-9, - and _, starting with a letter or digit", pb.Name)
	}
	if pb.Ns == "" {
		return nil, invalid("ns is required")
	}
	sched, err := ParseSchedule(pb.Schedule)
	if err != nil {
		return nil, invalid("%v", err)
	}
	t := &task{pb: pb, sched: sched, enabled: pb.Enabled == nil || *pb.Enabled}
	if t.jitter, err = duration("jitter", pb.Jitter, 0, 0, MaxJitter); err != nil {
		return nil, err
	}
	if t.timeout, err = duration("timeout", pb.Timeout, DefaultTimeout, time.Second, MaxTimeout); err != nil {
		return nil, err
	}
	if t.backoff, err = duration("retryBackoff", pb.RetryBackoff, DefaultRetryBackoff, 100*time.Millisecond, MaxBackoff); err != nil {
		return nil, err
	}
	if t.window, err = duration("catchUpWindow", pb.CatchUpWindow, DefaultCatchUpWindow, time.Second, MaxCatchUpWindow); err != nil {
		return nil, err
	}
	t.retries = DefaultRetries
	if pb.Retries != nil {
		if *pb.Retries < 0 || *pb.Retries > MaxRetries {
			return nil, invalid("retries must be from 0 to %d", MaxRetries)
		}
		t.retries = int(*pb.Retries)
	}
	switch pb.Overlap {
	case "":
		pb.Overlap = "skip"
	case "skip", "allow", "buffer_one":
	default:
		return nil, invalid("overlap %q is unknown; use skip, allow or buffer_one", pb.Overlap)
	}
	switch pb.CatchUp {
	case "":
		pb.CatchUp = "skip"
	case "skip", "run_once":
	default:
		return nil, invalid("catchUp %q is unknown; use skip or run_once", pb.CatchUp)
	}
	if len(pb.Description) > 500 {
		return nil, invalid("description is longer than 500 characters")
	}
	if err := s.checkAction(pb); err != nil {
		return nil, err
	}
	return t, nil
}

func (s *Service) checkAction(pb *schedulev1.Task) error {
	a := pb.Action
	if a == nil {
		return invalid("action is required: {\"type\":\"http\",\"url\":...} or {\"type\":\"queue\",\"queue\":...}")
	}
	if len(a.Body) > MaxBodyBytes {
		return invalid("action.body is larger than %d bytes", MaxBodyBytes)
	}
	switch a.Type {
	case "http":
		if a.Queue != "" || a.ContentType != "" || a.Builtin != "" {
			return invalid("an http action takes method, url, headers and body")
		}
		if a.Method == "" {
			a.Method = "POST"
		}
		a.Method = strings.ToUpper(a.Method)
		switch a.Method {
		case "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE":
		default:
			return invalid("action.method %q is not GET, HEAD, POST, PUT, PATCH or DELETE", a.Method)
		}
		if err := s.checkURL(a.Url); err != nil {
			return err
		}
		if len(a.Headers) > MaxHeaders {
			return invalid("action.headers has more than %d headers", MaxHeaders)
		}
		for k, v := range a.Headers {
			if !validHeaderName(k) || (!strings.HasPrefix(v, sealedPrefix) && (strings.ContainsAny(v, "\r\n\x00") || len(v) > 4096)) {
				return invalid("action.headers: %q is not a valid header", k)
			}
			switch strings.ToLower(k) {
			case "host", "content-length", "transfer-encoding", "connection", "te", "upgrade", "trailer":
				return invalid("action.headers: %s is set by the client and cannot be given", k)
			}
		}
	case "queue":
		if a.Method != "" || a.Url != "" || len(a.Headers) > 0 || a.Builtin != "" {
			return invalid("a queue action takes queue, body and contentType")
		}
		if s.cfg.Queue == nil {
			return invalid("queue actions need the queue service, which this installation does not run")
		}
		if !validName(a.Queue) {
			if strings.HasPrefix(a.Queue, "_") && pb.Ns == Namespace {
				break
			}
			return invalid("action.queue %q must be a queue name (1-63 characters of a-z, 0-9, - and _)", a.Queue)
		}
		switch a.ContentType {
		case "":
			a.ContentType = "json"
		case "json", "text", "bytes":
		default:
			return invalid("action.contentType %q is unknown; use json, text or bytes", a.ContentType)
		}
		if a.ContentType == "json" && a.Body != "" && !json.Valid([]byte(a.Body)) {
			return invalid("action.body is not valid JSON; set contentType to text for plain text")
		}
	case "builtin":
		if !pb.Builtin {
			return invalid("action.type builtin is reserved for dotdo's built-in tasks; use queue or http")
		}
	case "":
		return invalid("action.type is required: queue or http")
	default:
		return invalid("action.type %q is unknown; use queue or http", a.Type)
	}
	return nil
}

func validHeaderName(k string) bool {
	if k == "" || len(k) > 256 {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

// checkURL refuses URLs that are not http(s) and, unless private
// addresses are allowed, literal addresses and names that are loopback or
// private. Names are checked again at dial time against the address they
// resolve to, so DNS cannot point a public-looking name inside.
func (s *Service) checkURL(raw string) error {
	if raw == "" {
		return invalid("action.url is required")
	}
	if len(raw) > 2048 {
		return invalid("action.url is longer than 2048 characters")
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return invalid("action.url %q is not an absolute http or https URL", raw)
	}
	if u.User != nil {
		return invalid("action.url must not hold credentials; send them in action.headers")
	}
	if s.cfg.AllowPrivate {
		return nil
	}
	host := strings.ToLower(strings.TrimSuffix(u.Hostname(), "."))
	if host == "localhost" || strings.HasSuffix(host, ".localhost") || host == "metadata.google.internal" {
		return invalid("action.url %q is refused: %s is a loopback or internal name (allow private addresses in the schedule service's config to call it)", raw, host)
	}
	if ip, err := netip.ParseAddr(host); err == nil && !netguard.Public(ip) {
		return invalid("action.url %q is refused: %s is a loopback, private or reserved address (allow private addresses in the schedule service's config to call it)", raw, ip)
	}
	if ip := net.ParseIP(host); ip == nil && strings.Trim(host, "0123456789.") == "" {
		// Forms such as 2130706433 or 127.1 that resolvers read as IPv4.
		return invalid("action.url %q is refused: %s is not a dotted-quad address or a name", raw, host)
	}
	return nil
}

// errRefused is the dial-time refusal of a private address.
type errRefused struct{ ip netip.Addr }

func (e errRefused) Error() string {
	return fmt.Sprintf("refused to connect to %s: a loopback, private or reserved address", e.ip)
}
