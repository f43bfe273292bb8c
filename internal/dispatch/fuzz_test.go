package dispatch

import (
	"bytes"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestParseCGI(t *testing.T) {
	for _, c := range []struct {
		name, in string
		status   int
		header   string // name=value of one header to check
		body     string
		bad      bool
	}{
		{"plain", "Content-Type: text/plain\n\nhi", 200, "Content-Type=text/plain", "hi", false},
		{"crlf", "Content-Type: text/plain\r\nX-A: 1\r\n\r\nbody\r\n", 200, "X-A=1", "body\r\n", false},
		{"status", "Status: 404 Not Found\nContent-Type: text/plain\n\nno", 404, "Content-Type=text/plain", "no", false},
		{"location", "Location: /x\n\n", 302, "Location=/x", "", false},
		{"hop headers dropped", "Content-Type: a\nConnection: close\nContent-Length: 99\nX-Request-Id: forged\n\nb", 200, "Connection=", "b", false},
		{"no blank line", "Content-Type: text/plain\nhi", 0, "", "", true},
		{"no headers", "\nbody", 0, "", "", true},
		{"bad status", "Status: 99\n\n", 0, "", "", true},
		{"no colon", "garbage\n\n", 0, "", "", true},
		{"empty", "", 0, "", "", true},
	} {
		status, h, body, err := ParseCGI([]byte(c.in))
		if c.bad {
			if err == nil {
				t.Errorf("%s: ParseCGI(%q) = %d, nil error; want an error", c.name, c.in, status)
			}
			continue
		}
		if err != nil || status != c.status || string(body) != c.body {
			t.Errorf("%s: ParseCGI(%q) = %d %q %v; want %d %q", c.name, c.in, status, body, err, c.status, c.body)
			continue
		}
		k, v, _ := strings.Cut(c.header, "=")
		if h.Get(k) != v {
			t.Errorf("%s: header %s = %q; want %q", c.name, k, h.Get(k), v)
		}
	}
}

// FuzzParseCGI checks that no script output makes the parser panic, and
// that what it accepts is a valid status with headers a server can send.
func FuzzParseCGI(f *testing.F) {
	for _, s := range []string{"Content-Type: text/plain\n\nhi", "Status: 201\r\n\r\n", "Location: /\n\n", "X: \x00\n\n", "\n", "a:b\nc\n\n", "Status: 2000000000000000000000\n\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		status, h, body, err := ParseCGI(in)
		if err != nil {
			return
		}
		if status < 200 || status > 599 {
			t.Fatalf("status %d accepted", status)
		}
		if len(body) > len(in) {
			t.Fatalf("body longer than the input")
		}
		rec := httptest.NewRecorder()
		for k, vs := range h {
			if hopHeaders[k] {
				t.Fatalf("hop header %s kept", k)
			}
			for _, v := range vs {
				if strings.ContainsAny(v, "\r\n\x00") {
					t.Fatalf("header %s has a control character: %q", k, v)
				}
				rec.Header().Add(k, v)
			}
		}
	})
}

// FuzzReadUpload checks that no multipart body makes the upload reader
// panic or accept more than the module limit.
func FuzzReadUpload(f *testing.F) {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	w, _ := mw.CreateFormField("metadata")
	w.Write([]byte(`{"tags":["a"],"env":{"K":"v"},"limits":{"wallMs":100}}`))
	fw, _ := mw.CreateFormFile("module", "m.wasm")
	fw.Write([]byte("\x00asm\x01\x00\x00\x00"))
	mw.Close()
	f.Add(buf.Bytes(), mw.Boundary())
	f.Add([]byte("--x\r\nContent-Disposition: form-data; name=\"module\"\r\n\r\nabc\r\n--x--\r\n"), "x")
	f.Add([]byte("--x\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\nabc\r\n--x--\r\n"), "x")
	f.Add([]byte("garbage"), "b")
	f.Fuzz(func(t *testing.T, body []byte, boundary string) {
		r, _ := http.NewRequest("PUT", "/", bytes.NewReader(body))
		r.Header.Set("Content-Type", "multipart/form-data; boundary=\""+strings.ReplaceAll(boundary, "\"", "")+"\"")
		module, md, err := ReadUpload(r, 64)
		if err != nil {
			return
		}
		if len(module) > 64 {
			t.Fatalf("module of %d bytes accepted under a limit of 64", len(module))
		}
		md.validate()
	})
}

// FuzzHostPattern checks the host matcher on arbitrary host names: a
// match names a valid namespace and script.
func FuzzHostPattern(f *testing.F) {
	for _, s := range []string{"hello.tenant.example.test", "HELLO.Tenant.example.test:8080", "a.b.c.example.test", ".tenant.example.test", "x.y.example.test.", "[::1]:80"} {
		f.Add(s)
	}
	labels, err := parsePattern("{script}.{ns}.example.test")
	if err != nil {
		f.Fatal(err)
	}
	s := &HostIndex{pattern: labels}
	f.Fuzz(func(t *testing.T, host string) {
		ns, script, ok := s.hostScript(host)
		if ok && (!validName(ns) || !validName(script)) {
			t.Fatalf("hostScript(%q) = %q, %q", host, ns, script)
		}
	})
}

func TestHostPattern(t *testing.T) {
	for _, p := range []string{"{script}.example.com", "{script}.{ns}.{ns}.x", "x{script}.{ns}.y", "{script}..{ns}"} {
		if CheckHostPattern(p) == nil {
			t.Errorf("CheckHostPattern(%q) = nil; want an error", p)
		}
	}
	labels, _ := parsePattern("{ns}--{script}.x.y")
	if labels != nil {
		t.Errorf("a placeholder inside a label was accepted")
	}
	labels, _ = parsePattern("{script}.{ns}.workers.example.com")
	s := &HostIndex{pattern: labels}
	for host, want := range map[string]string{
		"hello.tenant.workers.example.com":      "tenant/hello",
		"Hello.Tenant.workers.example.com:8443": "tenant/hello",
		"hello.tenant.example.com":              "",
		"a.hello.tenant.workers.example.com":    "",
		"hello.tenant.workers.example.org":      "",
		"-x.tenant.workers.example.com":         "",
	} {
		ns, script, ok := s.hostScript(host)
		got := ""
		if ok {
			got = ns + "/" + script
		}
		if got != want {
			t.Errorf("hostScript(%q) = %q; want %q", host, got, want)
		}
	}
}

func TestAllowlist(t *testing.T) {
	for _, c := range []struct {
		allow []string
		url   string
		want  bool
	}{
		{[]string{"api.example.com"}, "https://api.example.com/x", true},
		{[]string{"api.example.com"}, "https://API.example.com:8443/x", true},
		{[]string{"api.example.com:443"}, "https://api.example.com:8443/x", false},
		{[]string{"*.example.com"}, "https://a.b.example.com/", true},
		{[]string{"*.example.com"}, "https://example.com/", false},
		{[]string{"*.example.com"}, "https://evilexample.com/", false},
		{[]string{"127.0.0.1:9000"}, "http://127.0.0.1:9000/", true},
		{[]string{"127.0.0.1:9000"}, "http://127.0.0.1:9001/", false},
		{nil, "http://x/", false},
	} {
		r, _ := http.NewRequest("GET", c.url, nil)
		if got := allowed(c.allow, r.URL); got != c.want {
			t.Errorf("allowed(%v, %s) = %v; want %v", c.allow, c.url, got, c.want)
		}
	}
}
