package dispatch

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"time"

	"github.com/dotdo/dotdo/internal/netguard"
)

// publicOnly refuses connections to addresses a tenant must not reach
// through fetch: every address netguard.Public refuses (loopback,
// private, link-local such as cloud metadata at 169.254.169.254, CGNAT,
// multicast, unspecified, reserved). It checks the address actually
// dialled, after DNS, so a public name that resolves to a private address
// is refused too.
func publicOnly(_, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return err
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return err
	}
	if !netguard.Public(ip) {
		return fmt.Errorf("%w: %s", errPrivateAddress, ip)
	}
	return nil
}

var errPrivateAddress = fmt.Errorf("address not allowed for fetch")

// fetchClient is the HTTP client of the fetch host function. Unless
// allowPrivate, it connects only to public addresses. It never follows
// redirects: the script sees them and decides.
func fetchClient(allowPrivate bool) *http.Client {
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	if !allowPrivate {
		d.Control = publicOnly
	}
	return &http.Client{
		Transport: &http.Transport{
			Proxy: nil,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				return d.DialContext(ctx, network, addr)
			},
			MaxIdleConnsPerHost: 16,
			IdleConnTimeout:     30 * time.Second,
			TLSHandshakeTimeout: 10 * time.Second,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}
