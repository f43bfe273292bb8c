package thingsdb_test

import (
	"fmt"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/dotdo/dotdo/internal/apierr"
	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
)

func (e *env) query(t *testing.T, req *dbv1.QueryAnalyticsRequest) *dbv1.QueryAnalyticsResponse {
	t.Helper()
	res, err := e.api.QueryAnalytics(ctx, connect.NewRequest(req))
	if err != nil {
		t.Fatalf("QueryAnalytics(%+v) = %v", req, err)
	}
	return res.Msg
}

func rowsOf(res *dbv1.QueryAnalyticsResponse) string {
	s := ""
	for _, r := range res.Rows {
		s += fmt.Sprintf("%s/%s=%d ", time.UnixMicro(r.Bucket).UTC().Format("01-02T15"), r.Value, r.Count)
	}
	return s
}

func TestAnalytics(t *testing.T) {
	eachBinding(t, func(t *testing.T, e *env) {
		if _, err := e.api.SetRollupProperty(ctx, connect.NewRequest(&dbv1.SetRollupPropertyRequest{Ns: "an", Event: "view", Property: "page"})); err != nil {
			t.Fatal(err)
		}
		base := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
		ev := func(name, page string, at time.Duration) *dbv1.Event {
			return &dbv1.Event{Ns: "an", Name: name, Properties: []byte(`{"page":"` + page + `","n":1}`), Timestamp: base.Add(at).UnixMicro()}
		}
		batch := []*dbv1.Event{
			ev("view", "/a", 5*time.Minute), ev("view", "/a", 10*time.Minute), ev("view", "/b", 20*time.Minute),
			ev("view", "/a", 70*time.Minute), ev("click", "/a", 5*time.Minute),
			ev("view", "/b", 25*time.Hour),
		}
		if _, err := e.api.IngestEvents(ctx, connect.NewRequest(&dbv1.IngestEventsRequest{Events: batch})); err != nil {
			t.Fatal(err)
		}
		q := &dbv1.QueryAnalyticsRequest{Ns: "an", Event: "view", From: base.UnixMicro(), To: base.Add(48 * time.Hour).UnixMicro(), Bucket: "hour", GroupBy: "page"}
		wantHourly := "03-01T10//a=2 03-01T10//b=1 03-01T11//a=1 03-02T11//b=1 "
		// Before any rollup: all from the tail.
		if got := rowsOf(e.query(t, q)); got != wantHourly {
			t.Fatalf("tail only: %s; want %s", got, wantHourly)
		}
		roll := func() int64 {
			res, err := e.api.UpdateAnalytics(ctx, connect.NewRequest(&dbv1.UpdateAnalyticsRequest{}))
			if err != nil {
				t.Fatal(err)
			}
			return res.Msg.Rolled
		}
		if n := roll(); n != 6 {
			t.Fatalf("rolled %d; want 6", n)
		}
		// Idempotent: nothing more to roll, and the answer is unchanged.
		if n := roll(); n != 0 {
			t.Fatalf("second roll %d; want 0", n)
		}
		res := e.query(t, q)
		if got := rowsOf(res); got != wantHourly || !res.FromRollups {
			t.Fatalf("from rollups: %s (fromRollups %v); want %s", got, res.FromRollups, wantHourly)
		}
		// New events: rollups + tail together.
		e.api.IngestEvents(ctx, connect.NewRequest(&dbv1.IngestEventsRequest{Events: []*dbv1.Event{ev("view", "/a", 15*time.Minute)}}))
		want2 := "03-01T10//a=3 03-01T10//b=1 03-01T11//a=1 03-02T11//b=1 "
		if got := rowsOf(e.query(t, q)); got != want2 {
			t.Fatalf("rollups + tail: %s; want %s", got, want2)
		}
		roll()
		if got := rowsOf(e.query(t, q)); got != want2 {
			t.Fatalf("after second roll: %s; want %s", got, want2)
		}
		// Daily, ungrouped.
		d := e.query(t, &dbv1.QueryAnalyticsRequest{Ns: "an", Event: "view", From: base.UnixMicro(), To: base.Add(48 * time.Hour).UnixMicro(), Bucket: "day"})
		if got := rowsOf(d); got != "03-01T00/=5 03-02T00/=1 " {
			t.Fatalf("daily: %s", got)
		}
		// A grouping the rollups do not keep is counted from raw events.
		raw := e.query(t, &dbv1.QueryAnalyticsRequest{Ns: "an", Event: "view", From: base.UnixMicro(), To: base.Add(2 * time.Hour).UnixMicro(), Bucket: "hour", GroupBy: "n"})
		if got := rowsOf(raw); got != "03-01T10/1=4 03-01T11/1=1 " || raw.FromRollups {
			t.Fatalf("raw grouping: %s (fromRollups %v)", got, raw.FromRollups)
		}
		// Bad input changes nothing.
		for _, bad := range []*dbv1.Event{
			{Ns: "_x!", Name: "view"}, {Ns: "an", Name: ""}, {Ns: "an", Name: "v", Properties: []byte(`[1]`)},
			{Ns: "an", Name: "v", Timestamp: -5},
		} {
			_, err := e.api.IngestEvents(ctx, connect.NewRequest(&dbv1.IngestEventsRequest{Events: []*dbv1.Event{ev("view", "/a", 0), bad}}))
			if code(err) != apierr.Invalid {
				t.Errorf("bad event %+v: %v", bad, err)
			}
		}
		if got := rowsOf(e.query(t, q)); got != want2 {
			t.Fatalf("after refused batches: %s; want %s", got, want2)
		}
		_, err := e.api.QueryAnalytics(ctx, connect.NewRequest(&dbv1.QueryAnalyticsRequest{Ns: "an", Event: "view", From: 10, To: 5}))
		if code(err) != apierr.Invalid {
			t.Errorf("inverted range: %v", err)
		}
	})
}

func TestStats(t *testing.T) {
	eachBinding(t, func(t *testing.T, e *env) {
		seed(t, e, "st")
		e.mustPut(t, &dbv1.Write{Ns: "st", Id: "v", Type: "Vec", Embedding: []float32{1, 2}})
		e.api.PutRelationship(ctx, connect.NewRequest(&dbv1.PutRelationshipRequest{Relationship: &dbv1.Relationship{Ns: "st", From: "d1", Type: "cites", To: "d2"}}))
		res, err := e.api.Stats(ctx, connect.NewRequest(&dbv1.StatsRequest{Ns: "st"}))
		if err != nil {
			t.Fatal(err)
		}
		m := res.Msg
		got := map[string]int64{}
		for _, tc := range m.Types {
			got[tc.Type] = tc.Count
		}
		if m.Things != 7 || got["Doc"] != 5 || got["Note"] != 1 || got["Vec"] != 1 || m.Relationships != 1 || m.Embeddings != 1 || m.StorageBytes < 200 {
			t.Fatalf("stats = %+v", m)
		}
	})
}
