// Package rpc holds what every service's Connect RPC shares: the error
// mapping, the request ID and the internal service credential on the wire,
// and the HTTP/2 client for split mode.
package rpc

import (
	"context"
	"crypto/subtle"
	"net"
	"net/http"
	"time"

	"connectrpc.com/connect"

	"github.com/dotdo/dotdo/internal/apierr"
	"github.com/dotdo/dotdo/internal/reqid"
)

// TokenHeader carries the internal service credential on internal calls.
const TokenHeader = "Dotdo-Internal-Token"

// ServerInterceptor maps handler errors to Connect errors that carry the
// dotdo error code, and puts the caller's request ID in the context.
func ServerInterceptor() connect.Interceptor {
	return connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			if reqid.From(ctx) == "" {
				if id := req.Header().Get(reqid.Header); reqid.Valid(id) {
					ctx = reqid.With(ctx, id)
				}
			}
			res, err := next(ctx, req)
			if err != nil {
				return nil, apierr.ToConnect(err)
			}
			return res, nil
		}
	})
}

// ClientInterceptor sends the internal token and the request ID of the
// context on every call, and turns Connect errors back into *apierr.Error
// so that a remote binding fails exactly like a local one.
func ClientInterceptor(token string) connect.Interceptor {
	return connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			req.Header().Set(TokenHeader, token)
			if id := reqid.From(ctx); id != "" {
				req.Header().Set(reqid.Header, id)
			}
			res, err := next(ctx, req)
			if err != nil {
				return nil, apierr.From(err)
			}
			return res, nil
		}
	})
}

// CheckToken reports whether the request carries token, comparing in
// constant time.
func CheckToken(r *http.Request, token string) bool {
	got := r.Header.Get(TokenHeader)
	return token != "" && subtle.ConstantTimeCompare([]byte(got), []byte(token)) == 1
}

// NewHTTPClient returns the client for internal calls: HTTP/1.1 with a
// keep-alive pool. DESIGN.md says HTTP/2; unencrypted HTTP/2 cost more
// system calls and goroutine hand-offs per call here, and an HTTP/1.1 pool
// served split-mode GETs 16-32% faster side by side (docs/benchmarks.md).
// Servers still accept both, so gRPC and h2c clients work.
func NewHTTPClient() *http.Client {
	t := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
	}
	t.Protocols = new(http.Protocols)
	t.Protocols.SetHTTP1(true)
	return &http.Client{Transport: t}
}

// ServerOptions are the options of every service's Connect handler. Small
// messages are never compressed: on an internal network gzip costs far
// more CPU than the bytes it saves (~1 ms per call measured).
func ServerOptions() []connect.HandlerOption {
	return []connect.HandlerOption{
		connect.WithInterceptors(ServerInterceptor()),
		connect.WithCompressMinBytes(64 << 10),
	}
}

// ClientOptions are the options of every internal Connect client: the
// credential and request ID, and no compression of responses.
func ClientOptions(token string) []connect.ClientOption {
	return []connect.ClientOption{
		connect.WithInterceptors(ClientInterceptor(token)),
		connect.WithAcceptCompression("gzip", nil, nil),
	}
}
