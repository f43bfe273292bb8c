package email

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/dotdo/dotdo/internal/apierr"
)

var templateData = map[string]map[string]any{
	"welcome":            {"name": "Ann", "appName": "Acme", "loginUrl": "https://acme.test/login"},
	"password-reset":     {"appName": "Acme", "resetUrl": "https://acme.test/reset?t=abc", "expiresIn": "1 hour"},
	"email-verification": {"appName": "Acme", "verifyUrl": "https://acme.test/verify?t=abc", "expiresIn": "24 hours"},
	"invite":             {"appName": "Acme", "inviterName": "Bob", "acceptUrl": "https://acme.test/invite?t=abc", "expiresIn": "7 days"},
	"magic-link":         {"appName": "Acme", "loginUrl": "https://acme.test/magic?t=abc", "expiresIn": "15 minutes"},
	"api-key-created":    {"appName": "Acme", "keyName": "ci", "keyPrefix": "sk_live_ab", "createdAt": "2026-01-01T00:00:00Z"},
}

func TestEmbeddedTemplates(t *testing.T) {
	tpl, err := LoadTemplates("")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tp := range tpl.List() {
		names = append(names, tp.Name)
	}
	for name, data := range templateData {
		if !slices.Contains(names, name) {
			t.Errorf("template %s missing from %v", name, names)
			continue
		}
		out, err := tpl.Render(name, data)
		if err != nil {
			t.Errorf("Render(%s) = %v", name, err)
			continue
		}
		if out.Subject == "" || out.HTML == "" || out.Text == "" {
			t.Errorf("Render(%s) = %+v; want subject, html and text", name, out)
		}
		for k, v := range data {
			s := v.(string)
			if !strings.Contains(out.Text, s) && !strings.Contains(out.Subject, s) {
				t.Errorf("Render(%s): %s (%q) appears in neither text nor subject", name, k, s)
			}
		}
		tp, _ := tpl.Lookup(name)
		var want []string
		for k := range data {
			want = append(want, k)
		}
		slices.Sort(want)
		if !slices.Equal(tp.Variables, want) {
			t.Errorf("%s variables = %v; want %v", name, tp.Variables, want)
		}
		// Every variable is required: leaving one out is a 422 naming it.
		for k := range data {
			partial := map[string]any{}
			for k2, v := range data {
				if k2 != k {
					partial[k2] = v
				}
			}
			_, err := tpl.Render(name, partial)
			if !apierr.Is(err, apierr.Unprocessable) || !strings.Contains(err.Error(), `"`+k+`"`) {
				t.Errorf("Render(%s) without %s = %v; want 422 naming it", name, k, err)
			}
		}
	}
}

func TestTemplateEscapesHTML(t *testing.T) {
	tpl, _ := LoadTemplates("")
	data := map[string]any{"name": `<script>alert(1)</script>`, "appName": "A&B", "loginUrl": `javascript:alert(1)`}
	out, err := tpl.Render("welcome", data)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.HTML, "<script>") || !strings.Contains(out.HTML, "&lt;script&gt;") || strings.Contains(out.HTML, `href="javascript:`) {
		t.Fatalf("HTML not escaped: %s", out.HTML)
	}
	if !strings.Contains(out.Text, "<script>") {
		t.Fatalf("text body should carry data verbatim: %s", out.Text)
	}
}

func TestTemplateOverrideDir(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("welcome.subject.txt", "Hey {{.name}}")
	write("welcome.html", "<h1>Hey {{.name}}</h1>")
	write("welcome.txt", "Hey {{.name}}")
	write("receipt.subject.txt", "Receipt {{.number}}")
	write("receipt.html", "<p>{{.total}}</p>")
	write("receipt.txt", "{{.total}}")
	tpl, err := LoadTemplates(dir)
	if err != nil {
		t.Fatal(err)
	}
	out, err := tpl.Render("welcome", map[string]any{"name": "Ann"})
	if err != nil || out.Subject != "Hey Ann" || out.HTML != "<h1>Hey Ann</h1>" {
		t.Fatalf("overridden welcome = %+v, %v", out, err)
	}
	if tp, _ := tpl.Lookup("welcome"); tp.Source != dir {
		t.Errorf("welcome source = %s; want %s", tp.Source, dir)
	}
	if _, ok := tpl.Lookup("magic-link"); !ok {
		t.Errorf("embedded templates not overridden are kept")
	}
	if _, err := tpl.Render("receipt", map[string]any{"number": 7, "total": "9 €"}); err != nil {
		t.Errorf("added template: %v", err)
	}
	write("broken.subject.txt", "{{.x")
	write("broken.html", "x")
	write("broken.txt", "x")
	if _, err := LoadTemplates(dir); err == nil {
		t.Errorf("a template that does not parse must fail the start")
	}
	if _, err := LoadTemplates(filepath.Join(dir, "missing")); err == nil {
		t.Errorf("a missing directory must fail the start")
	}
}
