package thingsdb

import (
	"context"
	"time"

	"connectrpc.com/connect"

	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
)

// Recorder records calls through a binding; *metrics.Registry is one.
type Recorder interface {
	Call(binding, method string, d time.Duration, err error)
}

// Instrument wraps a db binding so that every call is counted and timed
// under the binding's name.
func Instrument(api API, rec Recorder, binding string) API {
	return &instrumented{api: api, rec: rec, name: binding}
}

type instrumented struct {
	api  API
	rec  Recorder
	name string
}

func observe[Req, Res any](i *instrumented, method string, f func(context.Context, *connect.Request[Req]) (*connect.Response[Res], error), ctx context.Context, req *connect.Request[Req]) (*connect.Response[Res], error) {
	start := time.Now()
	res, err := f(ctx, req)
	i.rec.Call(i.name, method, time.Since(start), err)
	return res, err
}

func (i *instrumented) Get(ctx context.Context, r *connect.Request[dbv1.GetRequest]) (*connect.Response[dbv1.GetResponse], error) {
	return observe(i, "Get", i.api.Get, ctx, r)
}
func (i *instrumented) Put(ctx context.Context, r *connect.Request[dbv1.PutRequest]) (*connect.Response[dbv1.PutResponse], error) {
	return observe(i, "Put", i.api.Put, ctx, r)
}
func (i *instrumented) Delete(ctx context.Context, r *connect.Request[dbv1.DeleteRequest]) (*connect.Response[dbv1.DeleteResponse], error) {
	return observe(i, "Delete", i.api.Delete, ctx, r)
}
func (i *instrumented) List(ctx context.Context, r *connect.Request[dbv1.ListRequest]) (*connect.Response[dbv1.ListResponse], error) {
	return observe(i, "List", i.api.List, ctx, r)
}
func (i *instrumented) Batch(ctx context.Context, r *connect.Request[dbv1.BatchRequest]) (*connect.Response[dbv1.BatchResponse], error) {
	return observe(i, "Batch", i.api.Batch, ctx, r)
}
func (i *instrumented) PutRelationship(ctx context.Context, r *connect.Request[dbv1.PutRelationshipRequest]) (*connect.Response[dbv1.PutRelationshipResponse], error) {
	return observe(i, "PutRelationship", i.api.PutRelationship, ctx, r)
}
func (i *instrumented) DeleteRelationship(ctx context.Context, r *connect.Request[dbv1.DeleteRelationshipRequest]) (*connect.Response[dbv1.DeleteRelationshipResponse], error) {
	return observe(i, "DeleteRelationship", i.api.DeleteRelationship, ctx, r)
}
func (i *instrumented) Related(ctx context.Context, r *connect.Request[dbv1.RelatedRequest]) (*connect.Response[dbv1.RelatedResponse], error) {
	return observe(i, "Related", i.api.Related, ctx, r)
}
func (i *instrumented) Search(ctx context.Context, r *connect.Request[dbv1.SearchRequest]) (*connect.Response[dbv1.SearchResponse], error) {
	return observe(i, "Search", i.api.Search, ctx, r)
}
func (i *instrumented) GetSearchConfig(ctx context.Context, r *connect.Request[dbv1.GetSearchConfigRequest]) (*connect.Response[dbv1.SearchConfigResponse], error) {
	return observe(i, "GetSearchConfig", i.api.GetSearchConfig, ctx, r)
}
func (i *instrumented) SetSearchConfig(ctx context.Context, r *connect.Request[dbv1.SetSearchConfigRequest]) (*connect.Response[dbv1.SearchConfigResponse], error) {
	return observe(i, "SetSearchConfig", i.api.SetSearchConfig, ctx, r)
}
func (i *instrumented) GenerateMissingEmbeddings(ctx context.Context, r *connect.Request[dbv1.GenerateMissingEmbeddingsRequest]) (*connect.Response[dbv1.GenerateMissingEmbeddingsResponse], error) {
	return observe(i, "GenerateMissingEmbeddings", i.api.GenerateMissingEmbeddings, ctx, r)
}
func (i *instrumented) IngestEvents(ctx context.Context, r *connect.Request[dbv1.IngestEventsRequest]) (*connect.Response[dbv1.IngestEventsResponse], error) {
	return observe(i, "IngestEvents", i.api.IngestEvents, ctx, r)
}
func (i *instrumented) UpdateAnalytics(ctx context.Context, r *connect.Request[dbv1.UpdateAnalyticsRequest]) (*connect.Response[dbv1.UpdateAnalyticsResponse], error) {
	return observe(i, "UpdateAnalytics", i.api.UpdateAnalytics, ctx, r)
}
func (i *instrumented) QueryAnalytics(ctx context.Context, r *connect.Request[dbv1.QueryAnalyticsRequest]) (*connect.Response[dbv1.QueryAnalyticsResponse], error) {
	return observe(i, "QueryAnalytics", i.api.QueryAnalytics, ctx, r)
}
func (i *instrumented) SetRollupProperty(ctx context.Context, r *connect.Request[dbv1.SetRollupPropertyRequest]) (*connect.Response[dbv1.SetRollupPropertyResponse], error) {
	return observe(i, "SetRollupProperty", i.api.SetRollupProperty, ctx, r)
}
func (i *instrumented) Stats(ctx context.Context, r *connect.Request[dbv1.StatsRequest]) (*connect.Response[dbv1.StatsResponse], error) {
	return observe(i, "Stats", i.api.Stats, ctx, r)
}
