package dispatch

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"

	"connectrpc.com/connect"

	"github.com/dotdo/dotdo/internal/apierr"
	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
	"github.com/dotdo/dotdo/internal/thingsdb"
)

// chunkBytes is how many module bytes one ModuleChunk thing holds: its
// base64 text ({"b":"..."}) stays under the db service's 256 KiB data limit.
const chunkBytes = 180 << 10

// chunksPerBatch keeps a batch of chunks (about 240 KiB of JSON each) under
// the 1 MiB request limit of a db service in another process.
const chunksPerBatch = 3

func itoa(i int) string { return strconv.Itoa(i) }

// store keeps the dispatch state as things in Namespace through the db
// binding.
type store struct {
	db thingsdb.API
}

func (s *store) get(ctx context.Context, id string, v any) (int64, error) {
	res, err := s.db.Get(ctx, connect.NewRequest(&dbv1.GetRequest{Ns: Namespace, Id: id}))
	if err != nil {
		return 0, err
	}
	t := res.Msg.Thing
	if err := json.Unmarshal(t.Data, v); err != nil {
		return 0, fmt.Errorf("decode %s: %w", id, err)
	}
	return t.Version, nil
}

func (s *store) namespace(ctx context.Context, name string) (*NamespaceInfo, error) {
	var n NamespaceInfo
	if _, err := s.get(ctx, nsID(name), &n); err != nil {
		if apierr.Is(err, apierr.NotFound) {
			return nil, apierr.New(apierr.NotFound, "dispatch namespace %s not found", name)
		}
		return nil, err
	}
	return &n, nil
}

func (s *store) script(ctx context.Context, ns, name string) (*Script, int64, error) {
	var sc Script
	v, err := s.get(ctx, scriptID(ns, name), &sc)
	if err != nil {
		if apierr.Is(err, apierr.NotFound) {
			return nil, 0, apierr.New(apierr.NotFound, "script %s not found in namespace %s", name, ns)
		}
		return nil, 0, err
	}
	return &sc, v, nil
}

func (s *store) version(ctx context.Context, ns, name string, n int) (*Version, error) {
	var v Version
	if _, err := s.get(ctx, versionID(ns, name, n), &v); err != nil {
		return nil, err
	}
	return &v, nil
}

// listAll returns every thing of type typ in Namespace whose data.ns is ns
// (all of them when ns is empty).
func (s *store) listAll(ctx context.Context, typ, ns string) ([]*dbv1.Thing, error) {
	where := ""
	if ns != "" {
		where = string(mustJSON(map[string]any{"namespace": ns}))
	}
	var out []*dbv1.Thing
	cursor := ""
	for {
		res, err := s.db.List(ctx, connect.NewRequest(&dbv1.ListRequest{Ns: Namespace, Type: typ, Where: where, Limit: thingsdb.MaxListLimit, Cursor: cursor}))
		if err != nil {
			return nil, err
		}
		out = append(out, res.Msg.Items...)
		if res.Msg.NextCursor == "" {
			return out, nil
		}
		cursor = res.Msg.NextCursor
	}
}

// module reads a version's module bytes back from its chunks.
func (s *store) module(ctx context.Context, ns, name string, v *Version) ([]byte, error) {
	out := make([]byte, 0, v.Size)
	for i := 0; i < v.Chunks; i++ {
		var c struct {
			B string `json:"b"`
		}
		if _, err := s.get(ctx, chunkID(ns, name, v.SHA256, i), &c); err != nil {
			return nil, fmt.Errorf("module chunk %d of %s/%s: %w", i, ns, name, err)
		}
		b, err := base64.StdEncoding.DecodeString(c.B)
		if err != nil {
			return nil, fmt.Errorf("module chunk %d of %s/%s: %w", i, ns, name, err)
		}
		out = append(out, b...)
	}
	if len(out) != v.Size {
		return nil, fmt.Errorf("module of %s/%s v%d: %d bytes stored, want %d", ns, name, v.Version, len(out), v.Size)
	}
	return out, nil
}

func putOp(id, typ string, data []byte, cond dbv1.Condition, ifVersion int64) *dbv1.Op {
	return &dbv1.Op{Op: &dbv1.Op_Write{Write: &dbv1.Write{Ns: Namespace, Id: id, Type: typ, Data: data, Condition: cond, IfVersion: ifVersion}}}
}

func deleteOp(id string) *dbv1.Op {
	return &dbv1.Op{Op: &dbv1.Op_Delete{Delete: &dbv1.DeleteRequest{Ns: Namespace, Id: id}}}
}

// chunkOps writes module as chunks.
func chunkOps(ns, name, sha string, module []byte) []*dbv1.Op {
	var ops []*dbv1.Op
	for i := 0; i*chunkBytes < len(module); i++ {
		end := min((i+1)*chunkBytes, len(module))
		data := mustJSON(map[string]string{"namespace": ns, "script": name, "b": base64.StdEncoding.EncodeToString(module[i*chunkBytes : end])})
		ops = append(ops, putOp(chunkID(ns, name, sha, i), typeChunk, data, dbv1.Condition_CONDITION_NONE, 0))
	}
	return ops
}

// dropOps deletes the versions of sc not in keep, and the chunks of their
// modules that no kept version shares.
func (s *store) dropOps(ctx context.Context, sc *Script, keep []int, keepSHA map[string]bool) ([]*dbv1.Op, error) {
	var ops []*dbv1.Op
	for _, n := range sc.Stored {
		if slices.Contains(keep, n) {
			continue
		}
		v, err := s.version(ctx, sc.Namespace, sc.Name, n)
		if apierr.Is(err, apierr.NotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		ops = append(ops, deleteOp(versionID(sc.Namespace, sc.Name, n)))
		if !keepSHA[v.SHA256] {
			keepSHA[v.SHA256] = true // delete its chunks once
			for i := 0; i < v.Chunks; i++ {
				ops = append(ops, deleteOp(chunkID(sc.Namespace, sc.Name, v.SHA256, i)))
			}
		}
	}
	return ops, nil
}

func (s *store) batch(ctx context.Context, ops []*dbv1.Op) error {
	for len(ops) > 0 {
		n := min(len(ops), thingsdb.MaxBatchOps)
		if _, err := s.db.Batch(ctx, connect.NewRequest(&dbv1.BatchRequest{Ns: Namespace, Ops: ops[:n]})); err != nil {
			return err
		}
		ops = ops[n:]
	}
	return nil
}
