package mcp_test

import (
	"context"
	"testing"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/dotdo/dotdo/internal/thingsdb"
)

// BenchmarkCallTool is one tools/call through the SDK's client and server
// over in-memory transports, against the real services on SQLite: the
// cost MCP adds to a db call (JSON-RPC, argument validation against the
// input schema, permission check, output schema validation).
func BenchmarkCallTool(b *testing.B) {
	svc := setup(b, thingsdb.SQLite)
	cs := connectAs(b, svc, admin)
	ctx := context.Background()
	if res, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "db_upsert", Arguments: map[string]any{"ns": "bench", "id": "a", "type": "item", "data": map[string]any{"n": 1, "title": "a benchmark thing"}}}); err != nil || res.IsError {
		b.Fatal(err, res)
	}
	for _, tc := range []struct {
		name string
		args map[string]any
	}{
		{"whoami", map[string]any{}},
		{"db_get", map[string]any{"ns": "bench", "id": "a"}},
		{"db_list", map[string]any{"ns": "bench", "limit": 10}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			for b.Loop() {
				res, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: tc.name, Arguments: tc.args})
				if err != nil || res.IsError {
					b.Fatal(err, res)
				}
			}
		})
	}
	b.Run("db_get direct", func(b *testing.B) {
		for b.Loop() {
			if _, err := svc.db.Get(ctx, getReq("bench", "a")); err != nil {
				b.Fatal(err)
			}
		}
	})
}
