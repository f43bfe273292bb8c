package dispatch

import (
	"fmt"
	"strings"
)

// CheckHostPattern reports whether p is a valid host pattern.
func CheckHostPattern(p string) error {
	_, err := parsePattern(p)
	return err
}

// parsePattern splits a host pattern such as {script}.{ns}.example.com
// into labels; {script} and {ns} must each appear once as a whole label.
func parsePattern(p string) ([]string, error) {
	p = strings.ToLower(strings.TrimSpace(p))
	if p == "" {
		return nil, nil
	}
	labels := strings.Split(p, ".")
	var script, ns int
	for _, l := range labels {
		switch l {
		case "{script}":
			script++
		case "{ns}":
			ns++
		case "":
			return nil, fmt.Errorf("host pattern %q has an empty label", p)
		default:
			if strings.ContainsAny(l, "{}") {
				return nil, fmt.Errorf("host pattern %q: only {script} and {ns} are placeholders, each a whole label", p)
			}
		}
	}
	if script != 1 || ns != 1 {
		return nil, fmt.Errorf("host pattern %q must hold {script} and {ns} once each, such as {script}.{ns}.example.com", p)
	}
	return labels, nil
}

// hostScript returns the namespace and script a host names: a custom
// host name mapped to a script, or one the host pattern matches.
func (s *HostIndex) hostScript(host string) (ns, script string, ok bool) {
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.HasSuffix(host, "]") {
		host = host[:i]
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if r, ok := s.customHost(host); ok {
		return r.ns, r.script, true
	}
	if len(s.pattern) == 0 {
		return "", "", false
	}
	labels := strings.Split(host, ".")
	if len(labels) != len(s.pattern) {
		return "", "", false
	}
	for i, l := range s.pattern {
		switch l {
		case "{script}":
			script = labels[i]
		case "{ns}":
			ns = labels[i]
		default:
			if labels[i] != l {
				return "", "", false
			}
		}
	}
	if !validName(ns) || !validName(script) {
		return "", "", false
	}
	return ns, script, true
}
