package webhooks

import (
	"context"
	"encoding/json"
	"fmt"

	"connectrpc.com/connect"

	"github.com/dotdo/dotdo/internal/apierr"
	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
)

// upsert merges fields into the thing ns/id of type typ, creating it if
// absent, with optimistic concurrency. With at > 0 the write is ordered:
// a thing last written from an event newer than at is left alone (events
// arrive out of order), and eventAt records at. With fillOnly, fields
// already present are kept (stubs made from a reference, such as the
// customer of an invoice, never overwrite what the object's own events
// wrote). It reports whether it wrote.
func (s *Service) upsert(ctx context.Context, ns, id, typ string, fields map[string]any, at int64, fillOnly bool) (bool, error) {
	for range 8 {
		res, err := s.db.Get(ctx, connect.NewRequest(&dbv1.GetRequest{Ns: ns, Id: id}))
		if apierr.Is(err, apierr.NotFound) {
			data := map[string]any{}
			for k, v := range fields {
				data[k] = v
			}
			if at > 0 {
				data["eventAt"] = at
			}
			_, err := s.db.Put(ctx, connect.NewRequest(&dbv1.PutRequest{Write: &dbv1.Write{
				Ns: ns, Id: id, Type: typ, Data: mustJSON(data), Condition: dbv1.Condition_CONDITION_MUST_NOT_EXIST}}))
			if apierr.Is(err, apierr.PreconditionFailed) {
				continue
			}
			return err == nil, err
		}
		if err != nil {
			return false, err
		}
		t := res.Msg.Thing
		data := map[string]any{}
		if err := json.Unmarshal(t.Data, &data); err != nil {
			return false, fmt.Errorf("decode %s/%s: %w", ns, id, err)
		}
		if at > 0 {
			if prev, ok := data["eventAt"].(float64); ok && int64(prev) > at {
				return false, nil
			}
			data["eventAt"] = at
		}
		changed := at > 0
		for k, v := range fields {
			if _, has := data[k]; fillOnly && has {
				continue
			}
			data[k] = v
			changed = true
		}
		if !changed {
			return false, nil
		}
		_, err = s.db.Put(ctx, connect.NewRequest(&dbv1.PutRequest{Write: &dbv1.Write{
			Ns: ns, Id: id, Type: typ, Data: mustJSON(data), IfVersion: t.Version}}))
		if apierr.Is(err, apierr.PreconditionFailed) {
			continue
		}
		return err == nil, err
	}
	return false, apierr.New(apierr.Conflict, "%s/%s kept changing; retry", ns, id)
}

// relate puts a relationship from → to of type typ in ns.
func (s *Service) relate(ctx context.Context, ns, from, typ, to string) error {
	if from == "" || to == "" {
		return nil
	}
	_, err := s.db.PutRelationship(ctx, connect.NewRequest(&dbv1.PutRelationshipRequest{Relationship: &dbv1.Relationship{Ns: ns, From: from, Type: typ, To: to}}))
	return err
}

func (s *Service) unrelate(ctx context.Context, ns, from, typ, to string) error {
	_, err := s.db.DeleteRelationship(ctx, connect.NewRequest(&dbv1.DeleteRelationshipRequest{Ns: ns, From: from, Type: typ, To: to}))
	if apierr.Is(err, apierr.NotFound) {
		return nil
	}
	return err
}

// decode unmarshals a handler's body, failing permanently when it does
// not fit.
func decode(body []byte, v any) error {
	if err := json.Unmarshal(body, v); err != nil {
		return permanentf("payload does not decode: %v", err)
	}
	return nil
}
