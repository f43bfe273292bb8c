package mcp

import "testing"

// FuzzThingURI: any resource URI a client sends parses without panicking,
// and the URI of a parsed thing reads back as the same namespace and id.
func FuzzThingURI(f *testing.F) {
	for _, s := range []string{
		"dotdo://things/demo/a",
		"dotdo://things/demo/x%3A1",
		"dotdo://things/demo/",
		"dotdo://things//a",
		"dotdo://things/demo/a/b",
		"dotdo://things/demo/%zz",
		"dotdo://thing/demo/a",
		"file:///etc/passwd",
		"dotdo://things/demo/%2F",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, uri string) {
		ns, id, ok := parseThingURI(uri)
		if !ok {
			return
		}
		if ns == "" || id == "" {
			t.Fatalf("parseThingURI(%q) = %q, %q, true; want both parts", uri, ns, id)
		}
		ns2, id2, ok := parseThingURI(thingURI(ns, id))
		if !ok || ns2 != ns || id2 != id {
			t.Fatalf("thingURI(%q, %q) = %q reads back as %q, %q, %v", ns, id, thingURI(ns, id), ns2, id2, ok)
		}
	})
}
