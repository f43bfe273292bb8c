package dispatch

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tetratelabs/wazero/sys"

	"github.com/dotdo/dotdo/internal/apierr"
	"github.com/dotdo/dotdo/internal/reqid"
)

type randReader struct{}

func (randReader) Read(p []byte) (int, error) { return rand.Read(p) }

// errTooLarge is what a write past the response limit returns to the
// script.
var errTooLarge = errors.New("response larger than the script's limit")

// capped is a buffer that refuses writes past max bytes.
type capped struct {
	buf  bytes.Buffer
	max  int64
	over bool
}

func (c *capped) Write(p []byte) (int, error) {
	if int64(c.buf.Len()+len(p)) > c.max {
		c.over = true
		return 0, errTooLarge
	}
	return c.buf.Write(p)
}

// maxStderr is how much of a request's stderr is logged.
const maxStderr = 16 << 10

// Request is how a route chose a script.
type Request struct {
	Namespace, Script string
	// ScriptName is the CGI SCRIPT_NAME (the path prefix that selected
	// the script) and PathInfo the rest of the path.
	ScriptName, PathInfo string
	// ViaHost is true when the host name selected the script.
	ViaHost bool
}

// Invocation is one HTTP request to a script, read whole: what the
// dispatcher needs, in this process or behind its Connect contract.
type Invocation struct {
	Request
	Method, Host, RawQuery, Proto, RemoteAddr string
	Header                                    http.Header
	Body                                      []byte
	// Authenticated and MayInvoke describe the caller for private
	// namespaces: a credential was presented, and it holds
	// dispatch:invoke on the namespace.
	Authenticated, MayInvoke bool
}

// Response is a script's response, or the error envelope in its place.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// NewInvocation reads r (its body whole) for the script q chose.
func NewInvocation(r *http.Request, q Request) (*Invocation, error) {
	body, err := apierr.ReadBody(r)
	if err != nil {
		return nil, err
	}
	return &Invocation{Request: q, Method: r.Method, Host: r.Host, RawQuery: r.URL.RawQuery, Proto: r.Proto,
		RemoteAddr: r.RemoteAddr, Header: r.Header, Body: body}, nil
}

// WriteResponse writes res as the answer to r. Path-route responses share
// the API's origin: a script's page must not run there as the API, nor
// set its cookies.
func WriteResponse(w http.ResponseWriter, r *http.Request, viaHost bool, res *Response) {
	h := w.Header()
	for k, vs := range res.Header {
		h[k] = vs
	}
	if !viaHost {
		h.Del("Set-Cookie")
		h.Set("Content-Security-Policy", "sandbox")
	}
	h.Set("Content-Length", strconv.Itoa(len(res.Body)))
	w.WriteHeader(res.Status)
	if r.Method != http.MethodHead {
		w.Write(res.Body)
	}
}

// Serve runs the script for one HTTP request and writes its response, or
// the error envelope.
func (s *Service) Serve(w http.ResponseWriter, r *http.Request, q Request) {
	inv, err := NewInvocation(r, q)
	if err != nil {
		writeError(w, reqid.From(r.Context()), err)
		return
	}
	res, _ := s.Invoke(r.Context(), inv)
	WriteResponse(w, r, q.ViaHost, res)
}

// Invoke runs the script for one request: 404 for a missing script, 504
// when the wall-clock limit ends it, 502 for a trap, a failed exit, a
// response over the limit or one that is not CGI, all as the error
// envelope in the Response. The error is always nil here; a remote
// binding returns transport errors.
func (s *Service) Invoke(ctx context.Context, inv *Invocation) (*Response, error) {
	rid := reqid.From(ctx)
	fail := func(err error) (*Response, error) { return errorResponse(rid, err), nil }
	e, err := s.hold(ctx, inv.Namespace, inv.Script)
	if err != nil {
		if !apierr.Is(err, apierr.NotFound) {
			s.log.ErrorContext(ctx, "resolve script", "ns", inv.Namespace, "script", inv.Script, "err", err)
		}
		return fail(err)
	}
	defer s.eng.release(e.comp)
	if e.ns.Access == AccessPrivate {
		switch {
		case inv.ViaHost:
			return fail(apierr.New(apierr.NotFound, "script %s not found in namespace %s", inv.Script, inv.Namespace))
		case !inv.Authenticated:
			return fail(apierr.New(apierr.Unauthenticated, "namespace %s is private: send Authorization: Bearer <key with %s>", inv.Namespace, PermInvoke))
		case !inv.MayInvoke:
			return fail(apierr.New(apierr.Forbidden, "missing permission %s on namespace %s", PermInvoke, inv.Namespace))
		}
	}
	select {
	case s.slots <- struct{}{}:
	default:
		t := time.NewTimer(s.cfg.QueueTimeout)
		select {
		case s.slots <- struct{}{}:
			t.Stop()
		case <-t.C:
			return fail(apierr.New(apierr.Unavailable, "the dispatcher is busy; retry"))
		case <-ctx.Done():
			t.Stop()
			return fail(apierr.New(apierr.Unavailable, "request canceled"))
		}
	}
	start := time.Now()
	res := s.run(ctx, e, inv)
	<-s.slots
	d := time.Since(start)
	s.metrics.observe(inv.Namespace, inv.Script, res.outcome, d)
	if res.err != nil {
		s.log.WarnContext(ctx, "script failed", "ns", inv.Namespace, "script", inv.Script, "version", e.sc.Current.Version,
			"outcome", res.outcome, "err", res.detail, "ms", float64(d.Microseconds())/1000)
		return fail(res.err)
	}
	s.log.InfoContext(ctx, "script ran", "ns", inv.Namespace, "script", inv.Script, "version", e.sc.Current.Version,
		"status", res.status, "ms", float64(d.Microseconds())/1000, "subrequests", res.subrequests)
	return &Response{Status: res.status, Header: res.header, Body: res.body}, nil
}

// outcome labels of the per-script metrics.
const (
	outcomeOK       = "ok"
	outcomeTimeout  = "timeout"
	outcomeTrap     = "trap"
	outcomeTooLarge = "too_large"
	outcomeBadCGI   = "bad_response"
)

// result is how a run ended.
type result struct {
	status  int
	header  http.Header
	body    []byte
	outcome string
	// subrequests is how many host calls the script made.
	subrequests int
	err         error  // for the client
	detail      string // for the log
}

// run instantiates a fresh instance of the script's module for one
// request and parses its CGI output.
func (s *Service) run(ctx context.Context, e *entry, inv *Invocation) result {
	q := inv.Request
	wall := time.Duration(e.limits.WallMS) * time.Millisecond
	ctx, cancel := context.WithTimeout(ctx, wall)
	defer cancel()
	st := &callState{ns: e.ns, script: q.Script, limit: e.limits.Subrequests, maxBody: e.limits.ResponseBytes}
	ctx = context.WithValue(ctx, stateKey{}, st)
	stdout := &capped{max: e.limits.ResponseBytes}
	stderr := &capped{max: maxStderr}
	cfg := e.base.WithStdin(bytes.NewReader(inv.Body)).WithStdout(stdout).WithStderr(stderr)
	for _, kv := range cgiEnv(inv, e, reqid.From(ctx)) {
		cfg = cfg.WithEnv(kv[0], kv[1])
	}
	mod, err := e.rt.InstantiateModule(s.mem.with(ctx), e.comp.mod, cfg)
	if mod != nil {
		mod.Close(context.Background())
	}
	s.logStderr(ctx, q, stderr)
	if err != nil {
		var ee *sys.ExitError
		switch {
		case errors.As(err, &ee) && ee.ExitCode() == sys.ExitCodeDeadlineExceeded:
			s.metrics.kill(q.Namespace, q.Script, "time")
			return result{outcome: outcomeTimeout, detail: err.Error(),
				err: apierr.New(apierr.Timeout, "script %s/%s ran past its wall-clock limit of %d ms", q.Namespace, q.Script, e.limits.WallMS)}
		case errors.As(err, &ee) && ee.ExitCode() == sys.ExitCodeContextCanceled:
			return result{outcome: "canceled", detail: "client went away", err: apierr.New(apierr.Unavailable, "request canceled")}
		case stdout.over:
			s.metrics.kill(q.Namespace, q.Script, "response")
			return result{outcome: outcomeTooLarge, detail: err.Error(), err: badGateway("script %s/%s wrote more than its response limit of %d bytes", q.Namespace, q.Script, e.limits.ResponseBytes)}
		case errors.As(err, &ee):
			return result{outcome: outcomeTrap, detail: err.Error(), err: badGateway("script %s/%s exited with status %d", q.Namespace, q.Script, ee.ExitCode())}
		default:
			msg := err.Error()
			if strings.Contains(msg, "memory") {
				s.metrics.kill(q.Namespace, q.Script, "memory")
			}
			return result{outcome: outcomeTrap, detail: msg, err: badGateway("script %s/%s failed: %s", q.Namespace, q.Script, trapReason(msg))}
		}
	}
	if stdout.over {
		s.metrics.kill(q.Namespace, q.Script, "response")
		return result{outcome: outcomeTooLarge, detail: "response over limit", err: badGateway("script %s/%s wrote more than its response limit of %d bytes", q.Namespace, q.Script, e.limits.ResponseBytes)}
	}
	status, header, out, err := ParseCGI(stdout.buf.Bytes())
	if err != nil {
		return result{outcome: outcomeBadCGI, detail: err.Error(), err: badGateway("script %s/%s wrote an invalid CGI response: %v", q.Namespace, q.Script, err)}
	}
	return result{status: status, header: header, body: out, outcome: outcomeOK, subrequests: st.subrequests}
}

// gatewayError is a failed script: 502 with code bad_gateway in the
// error envelope (apierr has no 502; the shape is the same).
type gatewayError struct{ msg string }

func (e *gatewayError) Error() string { return "bad_gateway: " + e.msg }

func badGateway(format string, args ...any) error {
	return &gatewayError{msg: fmt.Sprintf(format, args...)}
}

// errorResponse is err as the error envelope.
func errorResponse(rid string, err error) *Response {
	code, status, msg := "", 0, ""
	var ge *gatewayError
	if errors.As(err, &ge) {
		code, status, msg = "bad_gateway", http.StatusBadGateway, ge.msg
	} else {
		e := apierr.From(err)
		code, status, msg = string(e.Code), e.Status(), e.Message
	}
	b, _ := json.Marshal(map[string]any{"error": map[string]string{"code": code, "message": msg, "requestId": rid}})
	return &Response{Status: status, Header: http.Header{"Content-Type": {"application/json"}}, Body: append(b, '\n')}
}

// writeError writes err in the error envelope.
func writeError(w http.ResponseWriter, rid string, err error) {
	var ge *gatewayError
	if !errors.As(err, &ge) {
		apierr.WriteHTTP(w, rid, err)
		return
	}
	res := errorResponse(rid, err)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(res.Body)))
	w.WriteHeader(res.Status)
	w.Write(res.Body)
}

// trapReason is the first line of a wazero error, without the stack.
func trapReason(msg string) string {
	if i := strings.IndexByte(msg, '\n'); i >= 0 {
		msg = msg[:i]
	}
	return strings.TrimPrefix(msg, "module[] function[_start] failed: ")
}

func (s *Service) logStderr(ctx context.Context, q Request, c *capped) {
	if c.buf.Len() == 0 {
		return
	}
	text := strings.TrimRight(c.buf.String(), "\n")
	for _, line := range strings.Split(text, "\n") {
		s.log.InfoContext(ctx, "script stderr", "ns", q.Namespace, "script", q.Script, "line", line)
	}
	if c.over {
		s.log.InfoContext(ctx, "script stderr truncated", "ns", q.Namespace, "script", q.Script, "limit", maxStderr)
	}
}

// cgiEnv is the request's CGI environment (RFC 3875, as WAGI passes it).
func cgiEnv(inv *Invocation, e *entry, rid string) [][2]string {
	q, n := inv.Request, len(inv.Body)
	host, port, err := net.SplitHostPort(inv.Host)
	if err != nil {
		host, port = inv.Host, "80"
	}
	remote, _, err := net.SplitHostPort(inv.RemoteAddr)
	if err != nil {
		remote = inv.RemoteAddr
	}
	path := q.PathInfo
	if path == "" {
		path = "/"
	}
	env := make([][2]string, 0, 20+len(inv.Header))
	env = append(env,
		[2]string{"GATEWAY_INTERFACE", "CGI/1.1"},
		[2]string{"SERVER_SOFTWARE", "dotdo"},
		[2]string{"SERVER_PROTOCOL", inv.Proto},
		[2]string{"SERVER_NAME", host},
		[2]string{"SERVER_PORT", port},
		[2]string{"REQUEST_METHOD", inv.Method},
		[2]string{"SCRIPT_NAME", q.ScriptName},
		[2]string{"PATH_INFO", path},
		[2]string{"X_MATCHED_ROUTE", q.ScriptName + "/..."},
		[2]string{"QUERY_STRING", inv.RawQuery},
		[2]string{"REMOTE_ADDR", remote},
		[2]string{"REQUEST_ID", rid},
		[2]string{"DOTDO_NAMESPACE", q.Namespace},
		[2]string{"DOTDO_SCRIPT", q.Script},
		[2]string{"DOTDO_VERSION", strconv.Itoa(e.sc.Current.Version)},
		[2]string{"CONTENT_LENGTH", strconv.Itoa(n)},
	)
	if ct := inv.Header.Get("Content-Type"); ct != "" {
		env = append(env, [2]string{"CONTENT_TYPE", ct})
	}
	for k, vs := range inv.Header {
		switch k {
		case "Content-Type", "Content-Length", "Connection", "Proxy-Authorization":
			continue
		case "Authorization":
			// On the path route the caller authenticated to dotdo with
			// it: a tenant's code never sees a dotdo credential.
			if !q.ViaHost {
				continue
			}
		}
		env = append(env, [2]string{"HTTP_" + strings.ToUpper(strings.ReplaceAll(k, "-", "_")), strings.Join(vs, ", ")})
	}
	return env
}

// hopHeaders are the response headers a script may not set.
var hopHeaders = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Transfer-Encoding": true, "Upgrade": true, "Te": true,
	"Trailer": true, "Content-Length": true, "Proxy-Authenticate": true, "X-Request-Id": true, "Status": true,
}

// maxCGIHeader bounds the header block of a CGI response.
const maxCGIHeader = 64 << 10

// ParseCGI splits a CGI response into its status, headers and body: header
// lines, then an empty line, then the body. "Status: 404 Not Found" sets
// the status (200 otherwise, 302 with only a Location).
func ParseCGI(out []byte) (int, http.Header, []byte, error) {
	h := http.Header{}
	rest := out
	for n := 0; ; n++ {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			return 0, nil, nil, errors.New("no empty line after the headers")
		}
		if len(out)-len(rest)+i > maxCGIHeader {
			return 0, nil, nil, errors.New("headers longer than 64 KiB")
		}
		line := rest[:i]
		rest = rest[i+1:]
		line = bytes.TrimSuffix(line, []byte{'\r'})
		if len(line) == 0 {
			if n == 0 {
				return 0, nil, nil, errors.New("no headers before the body (send at least Content-Type)")
			}
			break
		}
		k, v, ok := bytes.Cut(line, []byte{':'})
		key := string(bytes.TrimSpace(k))
		if !ok || key == "" || !validHeaderName(key) {
			return 0, nil, nil, errors.New("header line without a name and a colon")
		}
		val := string(bytes.TrimSpace(v))
		if strings.ContainsAny(val, "\r\x00") {
			return 0, nil, nil, errors.New("header value with a control character")
		}
		h.Add(key, val)
	}
	status := http.StatusOK
	if sv := h.Get("Status"); sv != "" {
		code, _, _ := strings.Cut(sv, " ")
		c, err := strconv.Atoi(code)
		if err != nil || c < 200 || c > 599 {
			return 0, nil, nil, errors.New("Status header is not a code from 200 to 599")
		}
		status = c
	} else if h.Get("Location") != "" {
		status = http.StatusFound
	}
	for k := range h {
		if hopHeaders[k] {
			delete(h, k)
		}
	}
	return status, h, rest, nil
}

func validHeaderName(k string) bool {
	for i := 0; i < len(k); i++ {
		c := k[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("\"(),/:;<=>?@[\\]{}", c) >= 0 {
			return false
		}
	}
	return true
}
