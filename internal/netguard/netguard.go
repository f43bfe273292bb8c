// Package netguard decides which addresses dotdo may connect to when it
// makes a request on a user's behalf: outbound webhook endpoints,
// scheduled HTTP calls and workers' fetch. Services check the address
// actually dialled (in net.Dialer.Control, after name resolution), so a
// public name that resolves to a private address is refused too.
package netguard

import "net/netip"

// reserved are ranges that are neither private nor loopback by Go's
// definitions but must not be reached either: "this network", CGNAT,
// IETF protocol assignments, documentation and benchmarking ranges, the
// old class E, and IPv6 translation and tunnelling prefixes that can
// carry a private IPv4 address (NAT64, 6to4) or are for discarding.
var reserved = func() []netip.Prefix {
	var out []netip.Prefix
	for _, p := range []string{"0.0.0.0/8", "100.64.0.0/10", "192.0.0.0/24", "192.0.2.0/24", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "240.0.0.0/4", "64:ff9b::/96", "64:ff9b:1::/48", "2001:db8::/32", "2002::/16", "100::/64"} {
		out = append(out, netip.MustParsePrefix(p))
	}
	return out
}()

// Public reports whether ip is a public unicast address: not loopback,
// private (RFC 1918, RFC 4193), link-local (cloud metadata at
// 169.254.169.254), multicast, unspecified or in a reserved range.
// IPv4-mapped IPv6 addresses are judged as the IPv4 address they carry.
func Public(ip netip.Addr) bool {
	ip = ip.Unmap()
	if !ip.IsValid() || ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
		ip.IsInterfaceLocalMulticast() || ip.IsMulticast() || ip.IsUnspecified() {
		return false
	}
	for _, p := range reserved {
		if p.Contains(ip) {
			return false
		}
	}
	return true
}
