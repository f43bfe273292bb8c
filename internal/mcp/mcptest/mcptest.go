// Package mcptest drives dotdo's MCP server with the SDK's client the way
// an agent would, for the tests of internal/mcp and of the built binary:
// list every tool following nextCursor, call every tool with valid
// arguments, and check each structuredContent against the tool's output
// schema.
package mcptest

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/jsonschema-go/jsonschema"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// ListTools lists every tool, following nextCursor, and returns them with
// the number of pages read.
func ListTools(ctx context.Context, t testing.TB, cs *sdk.ClientSession) ([]*sdk.Tool, int) {
	t.Helper()
	var tools []*sdk.Tool
	pages := 0
	cursor := ""
	for {
		res, err := cs.ListTools(ctx, &sdk.ListToolsParams{Cursor: cursor})
		if err != nil {
			t.Fatalf("tools/list (cursor %q): %v", cursor, err)
		}
		pages++
		tools = append(tools, res.Tools...)
		if res.NextCursor == "" {
			return tools, pages
		}
		if pages > 100 {
			t.Fatalf("tools/list: more than 100 pages")
		}
		cursor = res.NextCursor
	}
}

// Step is one tool call of a script; Args may use the structured results
// of the calls before it, by tool name.
type Step struct {
	Tool string
	Args func(prev map[string]map[string]any) map[string]any
}

func fixed(m map[string]any) func(map[string]map[string]any) map[string]any {
	return func(map[string]map[string]any) map[string]any { return m }
}

// GitHubSecret is the GitHub webhook secret the tests configure.
const GitHubSecret = "mcp-github-secret"

// GitHubDelivery returns the headers and body of a genuine GitHub ping
// webhook signed with GitHubSecret.
func GitHubDelivery() (map[string]string, []byte) {
	body := []byte(`{"zen":"Keep it logically awesome.","hook_id":1}`)
	mac := hmac.New(sha256.New, []byte(GitHubSecret))
	mac.Write(body)
	return map[string]string{
		"X-Hub-Signature-256": "sha256=" + hex.EncodeToString(mac.Sum(nil)),
		"X-Github-Event":      "ping",
		"X-Github-Delivery":   fmt.Sprintf("mcp-%d", time.Now().UnixNano()),
		"Content-Type":        "application/json",
	}, body
}

// Script returns a valid call of every tool the server may have, working
// in namespace ns (and the queue named ns and the task mcp-task of ns
// must exist, and a verified GitHub webhook must have been received). A tool of the server missing here fails CallAll, so a
// new tool cannot go untested.
func Script(ns string) []Step {
	return []Step{
		{"whoami", fixed(map[string]any{})},
		{"db_upsert", fixed(map[string]any{"ns": ns, "id": "a", "type": "item", "data": map[string]any{"n": 1, "title": "first item"}, "content": "the first item"})},
		{"db_relate", func(map[string]map[string]any) map[string]any {
			return map[string]any{"ns": ns, "from": "a", "type": "next", "to": "a", "data": map[string]any{"w": 1}}
		}},
		{"db_get", fixed(map[string]any{"ns": ns, "id": "a"})},
		{"db_list", fixed(map[string]any{"ns": ns, "type": "item", "limit": 10})},
		{"db_query", fixed(map[string]any{"ns": ns, "where": map[string]any{"n": map[string]any{"gte": 1}}})},
		{"db_related", fixed(map[string]any{"ns": ns, "id": "a", "direction": "out"})},
		{"db_search", fixed(map[string]any{"ns": ns, "query": "first", "mode": "fulltext", "limit": 5})},
		{"db_stats", fixed(map[string]any{"ns": ns})},
		{"analytics_query", func(map[string]map[string]any) map[string]any {
			now := time.Now().UTC()
			return map[string]any{"ns": ns, "event": "signup", "from": now.Add(-48 * time.Hour).Format(time.RFC3339), "to": now.Add(time.Hour).Format(time.RFC3339), "bucket": "day"}
		}},
		{"queue_send", fixed(map[string]any{"queue": ns, "messages": []any{map[string]any{"body": map[string]any{"hello": "world"}}, map[string]any{"body": "plain", "contentType": "text", "delaySeconds": 60}}})},
		{"queue_stats", fixed(map[string]any{"queue": ns})},
		{"email_send", fixed(map[string]any{"ns": ns, "from": "App <app@example.com>", "to": []string{"user@example.com"}, "subject": "Hello from MCP", "text": "Hi!"})},
		{"email_status", func(prev map[string]map[string]any) map[string]any {
			return map[string]any{"ns": ns, "id": prev["email_send"]["id"]}
		}},
		{"email_templates", fixed(map[string]any{"ns": ns})},
		{"tasks_list", fixed(map[string]any{"ns": ns})},
		{"task_run", fixed(map[string]any{"ns": ns, "name": "mcp-task"})},
		{"task_runs", fixed(map[string]any{"ns": ns, "name": "mcp-task", "limit": 10})},
		{"webhook_events", fixed(map[string]any{"provider": "github", "limit": 10})},
		{"webhook_replay", func(prev map[string]map[string]any) map[string]any {
			items, _ := prev["webhook_events"]["items"].([]any)
			if len(items) == 0 {
				return map[string]any{"id": "no-event-received"}
			}
			return map[string]any{"id": items[0].(map[string]any)["id"]}
		}},
		{"api_key_create", fixed(map[string]any{"name": "mcp test key", "role": "viewer", "namespaces": []string{ns}})},
		{"api_keys_list", fixed(map[string]any{"limit": 200})},
		{"api_key_revoke", func(prev map[string]map[string]any) map[string]any {
			key, _ := prev["api_key_create"]["key"].(map[string]any)
			return map[string]any{"id": key["id"]}
		}},
		{"db_delete", fixed(map[string]any{"ns": ns, "id": "a"})},
	}
}

// CallAll calls every tool in tools with the script's arguments, in the
// script's order, and checks that no call fails and that each
// structuredContent validates against the tool's output schema. It
// returns the structured results by tool name.
func CallAll(ctx context.Context, t testing.TB, cs *sdk.ClientSession, tools []*sdk.Tool, ns string) map[string]map[string]any {
	t.Helper()
	byName := map[string]*sdk.Tool{}
	for _, tool := range tools {
		byName[tool.Name] = tool
	}
	script := Script(ns)
	for name := range byName {
		if !slices.ContainsFunc(script, func(s Step) bool { return s.Tool == name }) {
			t.Errorf("tool %s has no step in mcptest.Script: add a valid call for it", name)
		}
	}
	prev := map[string]map[string]any{}
	for _, step := range script {
		tool := byName[step.Tool]
		if tool == nil {
			continue // a tool of a service this server does not have
		}
		args := step.Args(prev)
		res, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: step.Tool, Arguments: args})
		if err != nil {
			t.Fatalf("tools/call %s(%v): protocol error %v", step.Tool, args, err)
		}
		if res.IsError {
			t.Fatalf("tools/call %s(%v): isError: %s", step.Tool, args, Text(res))
		}
		out := CheckOutput(t, tool, res)
		prev[step.Tool] = out
	}
	return prev
}

// CheckOutput checks that res carries structuredContent that validates
// against tool's output schema, and a text block with the same JSON, and
// returns the structured content.
func CheckOutput(t testing.TB, tool *sdk.Tool, res *sdk.CallToolResult) map[string]any {
	t.Helper()
	if tool.OutputSchema == nil {
		t.Fatalf("tool %s has no output schema", tool.Name)
	}
	b, err := json.Marshal(tool.OutputSchema)
	if err != nil {
		t.Fatal(err)
	}
	var sc jsonschema.Schema
	if err := json.Unmarshal(b, &sc); err != nil {
		t.Fatalf("tool %s: output schema does not parse: %v", tool.Name, err)
	}
	resolved, err := sc.Resolve(nil)
	if err != nil {
		t.Fatalf("tool %s: output schema does not resolve: %v", tool.Name, err)
	}
	raw, err := json.Marshal(res.StructuredContent)
	if err != nil || res.StructuredContent == nil {
		t.Fatalf("tool %s: no structuredContent (%v)", tool.Name, err)
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	if err := resolved.Validate(v); err != nil {
		t.Errorf("tool %s: structuredContent %s does not validate against its output schema: %v", tool.Name, raw, err)
	}
	var text string
	for _, c := range res.Content {
		if tc, ok := c.(*sdk.TextContent); ok {
			text = tc.Text
		}
	}
	var tv any
	if err := json.Unmarshal([]byte(text), &tv); err != nil || !jsonEqual(tv, v) {
		t.Errorf("tool %s: text content %q is not the structured content %s", tool.Name, text, raw)
	}
	m, _ := v.(map[string]any)
	return m
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

// Text returns the text content of a result.
func Text(res *sdk.CallToolResult) string {
	var parts []string
	for _, c := range res.Content {
		if tc, ok := c.(*sdk.TextContent); ok {
			parts = append(parts, tc.Text)
		}
	}
	return strings.Join(parts, "\n")
}

// CheckTool checks what every tool must have: a description, input and
// output schemas of type object, and annotations whose hints agree.
func CheckTool(t testing.TB, tool *sdk.Tool) {
	t.Helper()
	if len(tool.Description) < 30 {
		t.Errorf("tool %s: description %q is not a clear sentence", tool.Name, tool.Description)
	}
	for what, s := range map[string]any{"input": tool.InputSchema, "output": tool.OutputSchema} {
		m, _ := s.(map[string]any)
		if m == nil {
			b, _ := json.Marshal(s)
			json.Unmarshal(b, &m)
		}
		if m["type"] != "object" {
			t.Errorf("tool %s: %s schema %v is not of type object", tool.Name, what, s)
		}
	}
	for what, s := range map[string]any{"input": tool.InputSchema, "output": tool.OutputSchema} {
		b, _ := json.Marshal(s)
		var v any
		json.Unmarshal(b, &v)
		if path := typeArray(v, what+"Schema"); path != "" {
			t.Errorf("tool %s: %s has a type array, which single-type clients reject", tool.Name, path)
		}
	}
	a := tool.Annotations
	if a == nil {
		t.Errorf("tool %s has no annotations", tool.Name)
		return
	}
	if a.DestructiveHint == nil || a.OpenWorldHint == nil {
		t.Errorf("tool %s: destructiveHint and openWorldHint must be said, not left to their defaults", tool.Name)
	}
	if a.ReadOnlyHint && a.DestructiveHint != nil && *a.DestructiveHint {
		t.Errorf("tool %s: read-only and destructive", tool.Name)
	}
}

// typeArray returns the path of the first "type" that is an array in a
// JSON schema, or "".
func typeArray(v any, path string) string {
	switch x := v.(type) {
	case map[string]any:
		if _, ok := x["type"].([]any); ok {
			return path
		}
		for k, c := range x {
			if p := typeArray(c, path+"."+k); p != "" {
				return p
			}
		}
	case []any:
		for i, c := range x {
			if p := typeArray(c, fmt.Sprintf("%s[%d]", path, i)); p != "" {
				return p
			}
		}
	}
	return ""
}

// Writes reports whether a tool changes state (not read-only).
func Writes(tool *sdk.Tool) bool { return tool.Annotations == nil || !tool.Annotations.ReadOnlyHint }

// Names returns the names of tools.
func Names(tools []*sdk.Tool) []string {
	out := make([]string, len(tools))
	for i, tool := range tools {
		out[i] = tool.Name
	}
	slices.Sort(out)
	return out
}

// Errorf formats a message for a failed expectation about a tool result.
func Errorf(tool string, args map[string]any, res *sdk.CallToolResult) string {
	return fmt.Sprintf("%s(%v) = isError %v %q", tool, args, res.IsError, Text(res))
}
