package email

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	htmltemplate "html/template"
	"io/fs"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	texttemplate "text/template"
	"text/template/parse"

	"github.com/dotdo/dotdo/internal/apierr"
)

//go:embed templates/*
var embedded embed.FS

// Template is one named email template: a subject (text/template), an
// HTML body (html/template, so data is escaped) and a plain-text body.
type Template struct {
	Name      string
	Variables []string
	Source    string // "embedded" or the override directory
	subject   *texttemplate.Template
	html      *htmltemplate.Template
	text      *texttemplate.Template
}

// Rendered is a template filled with data.
type Rendered struct {
	Subject string `json:"subject"`
	HTML    string `json:"html"`
	Text    string `json:"text"`
}

// Templates is the set of templates the service renders.
type Templates struct {
	byName map[string]*Template
}

var templateName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,63}$`)

// LoadTemplates loads the embedded templates, then those in dir (when not
// empty), which replace embedded ones of the same name. A template is the
// three files <name>.subject.txt, <name>.html and <name>.txt.
func LoadTemplates(dir string) (*Templates, error) {
	t := &Templates{byName: map[string]*Template{}}
	sub, _ := fs.Sub(embedded, "templates")
	if err := t.load(sub, "embedded"); err != nil {
		return nil, err
	}
	if dir != "" {
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			return nil, fmt.Errorf("email template directory %s: not a readable directory", dir)
		}
		if err := t.load(os.DirFS(dir), dir); err != nil {
			return nil, err
		}
	}
	return t, nil
}

func (t *Templates) load(fsys fs.FS, source string) error {
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return fmt.Errorf("read templates in %s: %w", source, err)
	}
	names := map[string]bool{}
	for _, e := range entries {
		if n, ok := strings.CutSuffix(e.Name(), ".subject.txt"); ok {
			names[n] = true
		}
	}
	for name := range names {
		if !templateName.MatchString(name) {
			return fmt.Errorf("template %q in %s: names are a-z, 0-9 and -", name, source)
		}
		read := func(ext string) (string, error) {
			b, err := fs.ReadFile(fsys, name+ext)
			if err != nil {
				return "", fmt.Errorf("template %s in %s needs %s%s: %w", name, source, name, ext, err)
			}
			return string(b), nil
		}
		subj, err := read(".subject.txt")
		if err != nil {
			return err
		}
		html, err := read(".html")
		if err != nil {
			return err
		}
		text, err := read(".txt")
		if err != nil {
			return err
		}
		tp := &Template{Name: name, Source: source}
		if tp.subject, err = texttemplate.New(name + ".subject.txt").Option("missingkey=error").Parse(strings.TrimSpace(subj)); err != nil {
			return fmt.Errorf("template %s in %s: %w", name, source, err)
		}
		if tp.html, err = htmltemplate.New(name + ".html").Option("missingkey=error").Parse(html); err != nil {
			return fmt.Errorf("template %s in %s: %w", name, source, err)
		}
		if tp.text, err = texttemplate.New(name + ".txt").Option("missingkey=error").Parse(text); err != nil {
			return fmt.Errorf("template %s in %s: %w", name, source, err)
		}
		vars := map[string]bool{}
		for _, tr := range []*parse.Tree{tp.subject.Tree, tp.html.Tree, tp.text.Tree} {
			if tr != nil {
				fields(tr.Root, vars)
			}
		}
		for v := range vars {
			tp.Variables = append(tp.Variables, v)
		}
		sort.Strings(tp.Variables)
		t.byName[name] = tp
	}
	return nil
}

// fields collects the top-level data fields a template refers to.
func fields(n parse.Node, out map[string]bool) {
	switch n := n.(type) {
	case *parse.ListNode:
		if n == nil {
			return
		}
		for _, c := range n.Nodes {
			fields(c, out)
		}
	case *parse.ActionNode:
		fields(n.Pipe, out)
	case *parse.PipeNode:
		if n == nil {
			return
		}
		for _, c := range n.Cmds {
			fields(c, out)
		}
	case *parse.CommandNode:
		for _, a := range n.Args {
			fields(a, out)
		}
	case *parse.FieldNode:
		if len(n.Ident) > 0 {
			out[n.Ident[0]] = true
		}
	case *parse.IfNode:
		fields(n.Pipe, out)
		fields(n.List, out)
		fields(n.ElseList, out)
	case *parse.RangeNode:
		fields(n.Pipe, out)
		fields(n.List, out)
		fields(n.ElseList, out)
	case *parse.WithNode:
		fields(n.Pipe, out)
		fields(n.List, out)
		fields(n.ElseList, out)
	}
}

// List returns the templates by name.
func (t *Templates) List() []*Template {
	out := make([]*Template, 0, len(t.byName))
	for _, tp := range t.byName {
		out = append(out, tp)
	}
	slices.SortFunc(out, func(a, b *Template) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Lookup returns the named template.
func (t *Templates) Lookup(name string) (*Template, bool) {
	tp, ok := t.byName[name]
	return tp, ok
}

// missingKey matches text/template's error for a missing map key.
var missingKey = regexp.MustCompile(`map has no entry for key "?([^"\s]+)"?`)

// Render fills the named template with data. A missing variable is an
// unprocessable error (422) that names it; an unknown template is 422 too.
func (t *Templates) Render(name string, data map[string]any) (*Rendered, error) {
	tp, ok := t.byName[name]
	if !ok {
		return nil, apierr.New(apierr.Unprocessable, "unknown template %q; GET /v1/email/templates lists them", name)
	}
	if data == nil {
		data = map[string]any{}
	}
	var subj, html, text bytes.Buffer
	for _, step := range []func() error{
		func() error { return tp.subject.Execute(&subj, data) },
		func() error { return tp.html.Execute(&html, data) },
		func() error { return tp.text.Execute(&text, data) },
	} {
		if err := step(); err != nil {
			return nil, renderError(name, err)
		}
	}
	s := strings.Join(strings.Fields(subj.String()), " ")
	return &Rendered{Subject: s, HTML: html.String(), Text: text.String()}, nil
}

func renderError(name string, err error) error {
	if m := missingKey.FindStringSubmatch(err.Error()); m != nil {
		return apierr.New(apierr.Unprocessable, "template %s needs the variable %q in data", name, m[1])
	}
	var ee texttemplate.ExecError
	if errors.As(err, &ee) {
		msg := ee.Err.Error()
		if i := strings.LastIndex(msg, ": "); i >= 0 {
			msg = msg[i+2:]
		}
		return apierr.New(apierr.Unprocessable, "template %s cannot be rendered with this data: %s", name, msg)
	}
	return apierr.New(apierr.Unprocessable, "template %s cannot be rendered with this data", name)
}
