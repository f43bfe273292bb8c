package email

import (
	"context"
	"encoding/json"
	"strings"

	"connectrpc.com/connect"

	"github.com/dotdo/dotdo/internal/apierr"
	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
)

// Suppression is an address the service refuses to send to.
type Suppression struct {
	Ns        string `json:"ns"`
	Email     string `json:"email"`
	Reason    string `json:"reason"`
	EmailID   string `json:"emailId,omitempty"`
	CreatedAt string `json:"createdAt"`
}

func suppressionID(ns, addr string) string {
	return "sup_" + hashHex(ns, strings.ToLower(addr))[:48]
}

// suppression returns the suppression of addr in ns, or nil.
func (s *Service) suppression(ctx context.Context, ns, addr string) (*Suppression, error) {
	res, err := s.db.Get(ctx, connect.NewRequest(&dbv1.GetRequest{Ns: Namespace, Id: suppressionID(ns, addr)}))
	if err != nil {
		if apierr.Is(err, apierr.NotFound) {
			return nil, nil
		}
		return nil, err
	}
	var sup Suppression
	if err := json.Unmarshal(res.Msg.Thing.Data, &sup); err != nil {
		return nil, err
	}
	return &sup, nil
}

func suppressOp(sup *Suppression) *dbv1.Op {
	data, _ := json.Marshal(sup)
	return &dbv1.Op{Op: &dbv1.Op_Write{Write: &dbv1.Write{Ns: Namespace, Id: suppressionID(sup.Ns, sup.Email), Type: typeSuppression, Data: data}}}
}

// AddSuppression adds addr to the suppression list of ns (or updates its reason).
func (s *Service) AddSuppression(ctx context.Context, ns, addr, reason string) (*Suppression, error) {
	a, err := parseAddress(addr)
	if err != nil || strings.ContainsAny(addr, "<>") {
		return nil, invalid("email %q is not a valid address", addr)
	}
	if reason == "" {
		reason = "manual"
	}
	if len(reason) > 500 {
		return nil, invalid("reason is limited to 500 bytes")
	}
	sup := &Suppression{Ns: ns, Email: strings.ToLower(a.Address), Reason: reason, CreatedAt: ts(s.now())}
	if _, err := s.db.Put(ctx, connect.NewRequest(&dbv1.PutRequest{Write: suppressOp(sup).GetWrite()})); err != nil {
		return nil, s.internal(ctx, "store suppression", err)
	}
	return sup, nil
}

// RemoveSuppression removes addr from the suppression list of ns.
func (s *Service) RemoveSuppression(ctx context.Context, ns, addr string) error {
	a, err := parseAddress(addr)
	if err != nil {
		return invalid("email %q is not a valid address", addr)
	}
	_, err = s.db.Delete(ctx, connect.NewRequest(&dbv1.DeleteRequest{Ns: Namespace, Id: suppressionID(ns, a.Address)}))
	if apierr.Is(err, apierr.NotFound) {
		return apierr.New(apierr.NotFound, "%s is not on the suppression list", strings.ToLower(a.Address))
	}
	if err != nil {
		return s.internal(ctx, "delete suppression", err)
	}
	return nil
}

// Suppressions lists the suppression list of ns, a page at a time.
func (s *Service) Suppressions(ctx context.Context, ns string, limit int, cursor string) ([]Suppression, string, error) {
	where, _ := json.Marshal(map[string]string{"ns": ns})
	res, err := s.db.List(ctx, connect.NewRequest(&dbv1.ListRequest{Ns: Namespace, Type: typeSuppression, Where: string(where), Order: "-createdAt", Limit: int32(limit), Cursor: cursor}))
	if err != nil {
		if apierr.Is(err, apierr.Invalid) {
			return nil, "", err
		}
		return nil, "", s.internal(ctx, "list suppressions", err)
	}
	out := []Suppression{}
	for _, t := range res.Msg.Items {
		var sup Suppression
		if json.Unmarshal(t.Data, &sup) == nil {
			out = append(out, sup)
		}
	}
	return out, res.Msg.NextCursor, nil
}
