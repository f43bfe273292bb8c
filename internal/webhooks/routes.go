package webhooks

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"connectrpc.com/connect"

	"github.com/dotdo/dotdo/internal/apierr"
	webhooksv1 "github.com/dotdo/dotdo/internal/gen/dotdo/webhooks/v1"
	"github.com/dotdo/dotdo/internal/reqid"
)

// API is what the REST routes need from the webhooks service: the local
// *Service in all-in-one mode, a Connect client in split mode.
type API interface {
	Receive(context.Context, *connect.Request[webhooksv1.ReceiveRequest]) (*connect.Response[webhooksv1.ReceiveResponse], error)
	ListEvents(context.Context, *connect.Request[webhooksv1.ListEventsRequest]) (*connect.Response[webhooksv1.ListEventsResponse], error)
	GetEvent(context.Context, *connect.Request[webhooksv1.GetEventRequest]) (*connect.Response[webhooksv1.EventResponse], error)
	ReplayEvent(context.Context, *connect.Request[webhooksv1.ReplayEventRequest]) (*connect.Response[webhooksv1.EventResponse], error)
	CreateEndpoint(context.Context, *connect.Request[webhooksv1.CreateEndpointRequest]) (*connect.Response[webhooksv1.EndpointResponse], error)
	GetEndpoint(context.Context, *connect.Request[webhooksv1.GetEndpointRequest]) (*connect.Response[webhooksv1.EndpointResponse], error)
	ListEndpoints(context.Context, *connect.Request[webhooksv1.ListEndpointsRequest]) (*connect.Response[webhooksv1.ListEndpointsResponse], error)
	UpdateEndpoint(context.Context, *connect.Request[webhooksv1.UpdateEndpointRequest]) (*connect.Response[webhooksv1.EndpointResponse], error)
	DeleteEndpoint(context.Context, *connect.Request[webhooksv1.DeleteEndpointRequest]) (*connect.Response[webhooksv1.DeleteEndpointResponse], error)
	RotateSecret(context.Context, *connect.Request[webhooksv1.RotateSecretRequest]) (*connect.Response[webhooksv1.EndpointResponse], error)
	ListDeliveries(context.Context, *connect.Request[webhooksv1.ListDeliveriesRequest]) (*connect.Response[webhooksv1.ListDeliveriesResponse], error)
	GetDelivery(context.Context, *connect.Request[webhooksv1.GetDeliveryRequest]) (*connect.Response[webhooksv1.DeliveryResponse], error)
	RetryDelivery(context.Context, *connect.Request[webhooksv1.RetryDeliveryRequest]) (*connect.Response[webhooksv1.DeliveryResponse], error)
	Emit(context.Context, *connect.Request[webhooksv1.EmitRequest]) (*connect.Response[webhooksv1.EmitResponse], error)
}

// Prefixes are the public path prefixes of the webhooks service.
var Prefixes = []string{"/webhooks", "/v1/webhooks"}

// OpenRoutes answer without credentials: the provider's signature is the
// authentication.
var OpenRoutes = []string{ReceiveRoute}

// ReceiveRoute is the route of inbound signed webhooks.
const ReceiveRoute = "POST /webhooks/{provider}"

// Default body limits of inbound deliveries.
const (
	DefaultMaxBody       = 1 << 20
	DefaultGitHubMaxBody = 25 << 20
)

// RouteOptions configure the REST routes.
type RouteOptions struct {
	// Authorize decides whether the caller may use permission on ns.
	// Events need webhooks:read / webhooks:manage on _webhooks; endpoints
	// on their namespace.
	Authorize func(r *http.Request, ns, permission string) error
	// MaxBody caps inbound bodies per provider (1 MiB; GitHub 25 MiB).
	MaxBody map[string]int64
}

// BodyLimit is the body limit of provider under opts.
func (o RouteOptions) BodyLimit(provider string) int64 {
	if n, ok := o.MaxBody[provider]; ok && n > 0 {
		return n
	}
	if provider == GitHub {
		return DefaultGitHubMaxBody
	}
	return DefaultMaxBody
}

type rest struct {
	api  API
	opts RouteOptions
}

// Routes registers the webhooks service's routes on mux.
func Routes(mux *http.ServeMux, api API, opts RouteOptions) {
	h := &rest{api: api, opts: opts}
	mux.HandleFunc(ReceiveRoute, h.receive)
	read, manage := h.need(Namespace, "webhooks:read"), h.need(Namespace, "webhooks:manage")
	mux.HandleFunc("GET /v1/webhooks/events", read(h.listEvents))
	mux.HandleFunc("GET /v1/webhooks/events/{id}", read(h.getEvent))
	mux.HandleFunc("POST /v1/webhooks/events/{id}/replay", manage(h.replayEvent))
	mux.HandleFunc("POST /v1/webhooks/endpoints", h.createEndpoint)
	mux.HandleFunc("GET /v1/webhooks/endpoints", h.listEndpoints)
	mux.HandleFunc("GET /v1/webhooks/endpoints/{id}", h.getEndpoint)
	mux.HandleFunc("PATCH /v1/webhooks/endpoints/{id}", h.updateEndpoint)
	mux.HandleFunc("DELETE /v1/webhooks/endpoints/{id}", h.deleteEndpoint)
	mux.HandleFunc("POST /v1/webhooks/endpoints/{id}/rotate-secret", h.rotateSecret)
	mux.HandleFunc("GET /v1/webhooks/endpoints/{id}/deliveries", h.listDeliveries)
	mux.HandleFunc("GET /v1/webhooks/deliveries/{id}", h.getDelivery)
	mux.HandleFunc("POST /v1/webhooks/deliveries/{id}/retry", h.retryDelivery)
	mux.HandleFunc("POST /v1/webhooks/emit", h.emit)
}

func (h *rest) authorize(r *http.Request, ns, perm string) error {
	if h.opts.Authorize == nil {
		return apierr.New(apierr.Forbidden, "no authorizer configured")
	}
	return h.opts.Authorize(r, ns, perm)
}

func (h *rest) need(ns, perm string) func(http.HandlerFunc) http.HandlerFunc {
	return func(next http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if err := h.authorize(r, ns, perm); err != nil {
				h.fail(w, r, err)
				return
			}
			next(w, r)
		}
	}
}

func (h *rest) fail(w http.ResponseWriter, r *http.Request, err error) {
	apierr.WriteHTTP(w, reqid.From(r.Context()), err)
}

// receive is POST /webhooks/{provider}: the raw body, unparsed, goes to
// verification. Only the signature and event headers are passed on.
func (h *rest) receive(w http.ResponseWriter, r *http.Request) {
	provider := r.PathValue("provider")
	if !knownProvider(provider) {
		h.fail(w, r, apierr.New(apierr.NotFound, "unknown webhook provider %q; use stripe, github, workos or resend", provider))
		return
	}
	req := &webhooksv1.ReceiveRequest{Provider: provider, RemoteIp: reqid.ClientIP(r), Headers: map[string]string{}}
	for _, k := range SignatureHeaders {
		if v := r.Header.Get(k); v != "" && len(v) <= 8<<10 {
			req.Headers[k] = v
		}
	}
	limit := h.opts.BodyLimit(provider)
	if r.ContentLength > limit {
		req.BodyTooLarge = true
	} else {
		body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
		var mbe *http.MaxBytesError
		switch {
		case errors.As(err, &mbe) || int64(len(body)) > limit:
			req.BodyTooLarge = true
		case err != nil:
			h.fail(w, r, apierr.New(apierr.Invalid, "reading request body: %v", err))
			return
		}
		req.Body = body
	}
	if req.BodyTooLarge {
		req.Body = nil
		w.Header().Set("Connection", "close")
	}
	res, err := h.api.Receive(r.Context(), connect.NewRequest(req))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	apierr.WriteJSON(w, http.StatusOK, map[string]any{"id": res.Msg.Id, "duplicate": res.Msg.Duplicate, "status": res.Msg.Status})
}

func millis(ms int64) string {
	if ms == 0 {
		return ""
	}
	return time.UnixMilli(ms).UTC().Format(time.RFC3339Nano)
}

type eventView struct {
	ID          string          `json:"id"`
	Provider    string          `json:"provider"`
	Type        string          `json:"type"`
	EventID     string          `json:"eventId,omitempty"`
	Status      string          `json:"status"`
	Verified    bool            `json:"verified"`
	Reason      string          `json:"reason,omitempty"`
	Attempts    int32           `json:"attempts"`
	Error       string          `json:"error,omitempty"`
	ReceivedAt  string          `json:"receivedAt"`
	ProcessedAt string          `json:"processedAt,omitempty"`
	UpdatedAt   string          `json:"updatedAt"`
	RemoteIP    string          `json:"remoteIp,omitempty"`
	Duplicates  *int32          `json:"duplicates,omitempty"`
	Payload     json.RawMessage `json:"payload,omitempty"`
}

func eventViewOf(e *webhooksv1.Event) eventView {
	v := eventView{ID: e.Id, Provider: e.Provider, Type: e.Type, EventID: e.EventId, Status: e.Status, Verified: e.Verified,
		Reason: e.Reason, Attempts: e.Attempts, Error: e.Error, ReceivedAt: millis(e.ReceivedAt), ProcessedAt: millis(e.ProcessedAt),
		UpdatedAt: millis(e.UpdatedAt), RemoteIP: e.RemoteIp}
	if len(e.Payload) > 0 {
		if json.Valid(e.Payload) {
			v.Payload = e.Payload
		} else {
			v.Payload, _ = json.Marshal(string(e.Payload))
		}
	}
	return v
}

func limitParam(r *http.Request) (int32, error) {
	v := r.URL.Query().Get("limit")
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 1000 {
		return 0, apierr.New(apierr.Invalid, "limit must be 1 to 1000")
	}
	return int32(n), nil
}

func (h *rest) listEvents(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, err := limitParam(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	res, err := h.api.ListEvents(r.Context(), connect.NewRequest(&webhooksv1.ListEventsRequest{
		Provider: q.Get("provider"), Type: q.Get("type"), Status: q.Get("status"), Limit: limit, Cursor: q.Get("cursor")}))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	items := make([]eventView, 0, len(res.Msg.Events))
	for _, e := range res.Msg.Events {
		items = append(items, eventViewOf(e))
	}
	out := map[string]any{"items": items}
	if res.Msg.NextCursor != "" {
		out["nextCursor"] = res.Msg.NextCursor
	}
	apierr.WriteJSON(w, http.StatusOK, out)
}

func (h *rest) getEvent(w http.ResponseWriter, r *http.Request) {
	res, err := h.api.GetEvent(r.Context(), connect.NewRequest(&webhooksv1.GetEventRequest{Id: r.PathValue("id")}))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	v := eventViewOf(res.Msg.Event)
	v.Duplicates = &res.Msg.Event.Duplicates
	apierr.WriteJSON(w, http.StatusOK, v)
}

func (h *rest) replayEvent(w http.ResponseWriter, r *http.Request) {
	res, err := h.api.ReplayEvent(r.Context(), connect.NewRequest(&webhooksv1.ReplayEventRequest{Id: r.PathValue("id")}))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	apierr.WriteJSON(w, http.StatusAccepted, eventViewOf(res.Msg.Event))
}

type endpointView struct {
	ID             string   `json:"id"`
	URL            string   `json:"url"`
	Description    string   `json:"description,omitempty"`
	EventTypes     []string `json:"eventTypes"`
	Namespace      string   `json:"namespace"`
	Disabled       bool     `json:"disabled"`
	DisabledReason string   `json:"disabledReason,omitempty"`
	CreatedAt      string   `json:"createdAt"`
	UpdatedAt      string   `json:"updatedAt"`
	Secret         string   `json:"secret,omitempty"`
}

func endpointViewOf(e *webhooksv1.Endpoint, secret string) endpointView {
	ts := e.EventTypes
	if ts == nil {
		ts = []string{}
	}
	return endpointView{ID: e.Id, URL: e.Url, Description: e.Description, EventTypes: ts, Namespace: e.Namespace, Disabled: e.Disabled,
		DisabledReason: e.DisabledReason, CreatedAt: millis(e.CreatedAt), UpdatedAt: millis(e.UpdatedAt), Secret: secret}
}

// maxAPIBody caps the operations' JSON bodies: the gateway lets this
// service's paths take inbound webhooks' larger bodies.
const maxAPIBody = 1 << 20

// decodeBody decodes r's body as apierr.DecodeBody does, under
// maxAPIBody.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	r.Body = http.MaxBytesReader(w, r.Body, maxAPIBody)
	return apierr.DecodeBody(r, v)
}

func (h *rest) createEndpoint(w http.ResponseWriter, r *http.Request) {
	var in struct {
		URL         string   `json:"url"`
		Description string   `json:"description"`
		EventTypes  []string `json:"eventTypes"`
		Namespace   string   `json:"namespace"`
		Secret      string   `json:"secret"`
	}
	if err := decodeBody(w, r, &in); err != nil {
		h.fail(w, r, err)
		return
	}
	if in.Namespace == "" {
		in.Namespace = "default"
	}
	if err := h.authorize(r, in.Namespace, "webhooks:manage"); err != nil {
		h.fail(w, r, err)
		return
	}
	res, err := h.api.CreateEndpoint(r.Context(), connect.NewRequest(&webhooksv1.CreateEndpointRequest{
		Url: in.URL, Description: in.Description, EventTypes: in.EventTypes, Namespace: in.Namespace, Secret: in.Secret}))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	apierr.WriteJSON(w, http.StatusCreated, endpointViewOf(res.Msg.Endpoint, res.Msg.Secret))
}

// endpointFor loads an endpoint and checks perm on its namespace; an
// endpoint the caller may not see is not found.
func (h *rest) endpointFor(w http.ResponseWriter, r *http.Request, perm string) *webhooksv1.Endpoint {
	res, err := h.api.GetEndpoint(r.Context(), connect.NewRequest(&webhooksv1.GetEndpointRequest{Id: r.PathValue("id")}))
	if err != nil {
		h.fail(w, r, err)
		return nil
	}
	if err := h.authorize(r, res.Msg.Endpoint.Namespace, perm); err != nil {
		h.fail(w, r, err)
		return nil
	}
	return res.Msg.Endpoint
}

func (h *rest) listEndpoints(w http.ResponseWriter, r *http.Request) {
	ns := r.URL.Query().Get("namespace")
	if ns == "" {
		ns = "default"
	}
	if err := h.authorize(r, ns, "webhooks:read"); err != nil {
		h.fail(w, r, err)
		return
	}
	limit, err := limitParam(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	res, err := h.api.ListEndpoints(r.Context(), connect.NewRequest(&webhooksv1.ListEndpointsRequest{Namespace: ns, Limit: limit, Cursor: r.URL.Query().Get("cursor")}))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	items := make([]endpointView, 0, len(res.Msg.Endpoints))
	for _, e := range res.Msg.Endpoints {
		items = append(items, endpointViewOf(e, ""))
	}
	out := map[string]any{"items": items}
	if res.Msg.NextCursor != "" {
		out["nextCursor"] = res.Msg.NextCursor
	}
	apierr.WriteJSON(w, http.StatusOK, out)
}

func (h *rest) getEndpoint(w http.ResponseWriter, r *http.Request) {
	if e := h.endpointFor(w, r, "webhooks:read"); e != nil {
		apierr.WriteJSON(w, http.StatusOK, endpointViewOf(e, ""))
	}
}

func (h *rest) updateEndpoint(w http.ResponseWriter, r *http.Request) {
	var in struct {
		URL         *string   `json:"url"`
		Description *string   `json:"description"`
		EventTypes  *[]string `json:"eventTypes"`
		Disabled    *bool     `json:"disabled"`
	}
	if err := decodeBody(w, r, &in); err != nil {
		h.fail(w, r, err)
		return
	}
	e := h.endpointFor(w, r, "webhooks:manage")
	if e == nil {
		return
	}
	req := &webhooksv1.UpdateEndpointRequest{Id: e.Id, Url: in.URL, Description: in.Description, Disabled: in.Disabled}
	if in.EventTypes != nil {
		req.EventTypes, req.SetEventTypes = *in.EventTypes, true
	}
	res, err := h.api.UpdateEndpoint(r.Context(), connect.NewRequest(req))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	apierr.WriteJSON(w, http.StatusOK, endpointViewOf(res.Msg.Endpoint, ""))
}

func (h *rest) deleteEndpoint(w http.ResponseWriter, r *http.Request) {
	e := h.endpointFor(w, r, "webhooks:manage")
	if e == nil {
		return
	}
	if _, err := h.api.DeleteEndpoint(r.Context(), connect.NewRequest(&webhooksv1.DeleteEndpointRequest{Id: e.Id})); err != nil {
		h.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *rest) rotateSecret(w http.ResponseWriter, r *http.Request) {
	var in struct {
		KeepOldSeconds int64 `json:"keepOldSeconds"`
	}
	if r.ContentLength != 0 {
		if err := decodeBody(w, r, &in); err != nil {
			h.fail(w, r, err)
			return
		}
	}
	e := h.endpointFor(w, r, "webhooks:manage")
	if e == nil {
		return
	}
	res, err := h.api.RotateSecret(r.Context(), connect.NewRequest(&webhooksv1.RotateSecretRequest{Id: e.Id, KeepOldSeconds: in.KeepOldSeconds}))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	apierr.WriteJSON(w, http.StatusOK, endpointViewOf(res.Msg.Endpoint, res.Msg.Secret))
}

type deliveryView struct {
	ID             string          `json:"id"`
	EndpointID     string          `json:"endpointId"`
	Namespace      string          `json:"namespace"`
	EventType      string          `json:"eventType"`
	Status         string          `json:"status"`
	Attempts       int32           `json:"attempts"`
	NextAttemptAt  string          `json:"nextAttemptAt,omitempty"`
	LastStatusCode int32           `json:"lastStatusCode,omitempty"`
	LastError      string          `json:"lastError,omitempty"`
	CreatedAt      string          `json:"createdAt"`
	UpdatedAt      string          `json:"updatedAt"`
	Payload        json.RawMessage `json:"payload,omitempty"`
}

func deliveryViewOf(d *webhooksv1.Delivery) deliveryView {
	v := deliveryView{ID: d.Id, EndpointID: d.EndpointId, Namespace: d.Namespace, EventType: d.EventType, Status: d.Status, Attempts: d.Attempts,
		LastStatusCode: d.LastStatusCode, LastError: d.LastError, CreatedAt: millis(d.CreatedAt), UpdatedAt: millis(d.UpdatedAt)}
	if d.Status == DeliveryPending {
		v.NextAttemptAt = millis(d.NextAttemptAt)
	}
	if json.Valid(d.Payload) {
		v.Payload = d.Payload
	}
	return v
}

func (h *rest) listDeliveries(w http.ResponseWriter, r *http.Request) {
	e := h.endpointFor(w, r, "webhooks:read")
	if e == nil {
		return
	}
	limit, err := limitParam(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	res, err := h.api.ListDeliveries(r.Context(), connect.NewRequest(&webhooksv1.ListDeliveriesRequest{EndpointId: e.Id,
		Status: r.URL.Query().Get("status"), Limit: limit, Cursor: r.URL.Query().Get("cursor")}))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	items := make([]deliveryView, 0, len(res.Msg.Deliveries))
	for _, d := range res.Msg.Deliveries {
		items = append(items, deliveryViewOf(d))
	}
	out := map[string]any{"items": items}
	if res.Msg.NextCursor != "" {
		out["nextCursor"] = res.Msg.NextCursor
	}
	apierr.WriteJSON(w, http.StatusOK, out)
}

// deliveryFor loads a delivery and checks perm on its namespace.
func (h *rest) deliveryFor(w http.ResponseWriter, r *http.Request, perm string) *webhooksv1.Delivery {
	res, err := h.api.GetDelivery(r.Context(), connect.NewRequest(&webhooksv1.GetDeliveryRequest{Id: r.PathValue("id")}))
	if err != nil {
		h.fail(w, r, err)
		return nil
	}
	if err := h.authorize(r, res.Msg.Delivery.Namespace, perm); err != nil {
		h.fail(w, r, err)
		return nil
	}
	return res.Msg.Delivery
}

func (h *rest) getDelivery(w http.ResponseWriter, r *http.Request) {
	if d := h.deliveryFor(w, r, "webhooks:read"); d != nil {
		apierr.WriteJSON(w, http.StatusOK, deliveryViewOf(d))
	}
}

func (h *rest) retryDelivery(w http.ResponseWriter, r *http.Request) {
	d := h.deliveryFor(w, r, "webhooks:manage")
	if d == nil {
		return
	}
	res, err := h.api.RetryDelivery(r.Context(), connect.NewRequest(&webhooksv1.RetryDeliveryRequest{Id: d.Id}))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	apierr.WriteJSON(w, http.StatusAccepted, deliveryViewOf(res.Msg.Delivery))
}

func (h *rest) emit(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Namespace string          `json:"namespace"`
		Type      string          `json:"type"`
		Data      json.RawMessage `json:"data"`
	}
	if err := decodeBody(w, r, &in); err != nil {
		h.fail(w, r, err)
		return
	}
	if in.Namespace == "" {
		in.Namespace = "default"
	}
	if err := h.authorize(r, in.Namespace, "webhooks:manage"); err != nil {
		h.fail(w, r, err)
		return
	}
	res, err := h.api.Emit(r.Context(), connect.NewRequest(&webhooksv1.EmitRequest{Namespace: in.Namespace, Type: in.Type, Data: in.Data}))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	apierr.WriteJSON(w, http.StatusAccepted, map[string]any{"deliveryIds": res.Msg.DeliveryIds})
}
