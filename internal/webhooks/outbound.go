package webhooks

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"connectrpc.com/connect"

	"github.com/dotdo/dotdo/internal/apierr"
	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
	webhooksv1 "github.com/dotdo/dotdo/internal/gen/dotdo/webhooks/v1"
	"github.com/dotdo/dotdo/internal/netguard"
	"github.com/dotdo/dotdo/internal/queue"
	"github.com/dotdo/dotdo/internal/thingsdb"
)

// Schedule is the Standard Webhooks retry schedule: the delay before each
// attempt. The first attempt is immediate; after the last, the delivery
// has failed.
var Schedule = []time.Duration{0, 5 * time.Second, 5 * time.Minute, 30 * time.Minute, 2 * time.Hour,
	5 * time.Hour, 10 * time.Hour, 14 * time.Hour, 20 * time.Hour, 24 * time.Hour}

// OutboundConfig configures outbound delivery.
type OutboundConfig struct {
	// SecretKey (32 bytes) encrypts endpoint secrets at rest.
	SecretKey []byte
	// AllowPrivate lets endpoints be on loopback, private, link-local and
	// other non-public addresses (for development); refused by default,
	// checked when connecting, so DNS cannot point a public name inward.
	AllowPrivate bool
	// Timeout of one attempt (15 s).
	Timeout time.Duration
	// Transport, when set, replaces the HTTP transport (tests).
	Transport http.RoundTripper
}

type outbound struct {
	s      *Service
	cfg    OutboundConfig
	client *http.Client
	aead   cipher.AEAD
}

func newOutbound(s *Service, cfg OutboundConfig) *outbound {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 15 * time.Second
	}
	o := &outbound{s: s, cfg: cfg}
	key := cfg.SecretKey
	if len(key) != 32 {
		key = make([]byte, 32)
		rand.Read(key) // secrets then last only as long as the process
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte("dotdo webhooks endpoint secrets"))
	block, _ := aes.NewCipher(m.Sum(nil))
	o.aead, _ = cipher.NewGCM(block)
	tr := cfg.Transport
	if tr == nil {
		d := &net.Dialer{Timeout: 10 * time.Second, Control: o.control}
		tr = &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 4, IdleConnTimeout: 90 * time.Second,
			TLSHandshakeTimeout: 10 * time.Second, ResponseHeaderTimeout: cfg.Timeout}
	}
	o.client = &http.Client{Transport: tr, Timeout: cfg.Timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return o
}

// control refuses connections to non-public addresses at dial time,
// after DNS resolution.
func (o *outbound) control(network, address string, _ syscall.RawConn) error {
	if o.cfg.AllowPrivate {
		return nil
	}
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return err
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return err
	}
	if !netguard.Public(ip) {
		return fmt.Errorf("address %s is not public; endpoints on private networks need --webhooks-allow-private", ip)
	}
	return nil
}

func (o *outbound) seal(secret string) string {
	nonce := make([]byte, o.aead.NonceSize())
	rand.Read(nonce)
	return base64.StdEncoding.EncodeToString(o.aead.Seal(nonce, nonce, []byte(secret), nil))
}

func (o *outbound) open(sealed string) (string, error) {
	b, err := base64.StdEncoding.DecodeString(sealed)
	if err != nil || len(b) < o.aead.NonceSize() {
		return "", errors.New("sealed secret malformed")
	}
	p, err := o.aead.Open(nil, b[:o.aead.NonceSize()], b[o.aead.NonceSize():], nil)
	if err != nil {
		return "", errors.New("endpoint secret cannot be unsealed (was DOTDO_SECRET_KEY changed?)")
	}
	return string(p), nil
}

// endpointJSON is a WebhookEndpoint thing's data.
type endpointJSON struct {
	URL            string         `json:"url"`
	Description    string         `json:"description,omitempty"`
	EventTypes     []string       `json:"eventTypes"`
	Namespace      string         `json:"namespace"`
	Disabled       bool           `json:"disabled"`
	DisabledReason string         `json:"disabledReason,omitempty"`
	Secrets        []sealedSecret `json:"secrets"`
}

type sealedSecret struct {
	Sealed string `json:"sealed"`
	// ExpiresAt (Unix ms) ends a rotated-out secret; 0 for the current.
	ExpiresAt int64 `json:"expiresAt,omitempty"`
}

// deliveryJSON is a WebhookDelivery thing's data.
type deliveryJSON struct {
	EndpointID     string          `json:"endpointId"`
	Namespace      string          `json:"namespace"`
	EventType      string          `json:"eventType"`
	Status         string          `json:"status"`
	Attempts       int             `json:"attempts"`
	NextAttemptAt  int64           `json:"nextAttemptAt"`
	LastStatusCode int             `json:"lastStatusCode,omitempty"`
	LastError      string          `json:"lastError,omitempty"`
	Payload        json.RawMessage `json:"payload"`
	Log            []attemptLog    `json:"log"`
}

type attemptLog struct {
	At     int64  `json:"at"`
	Status int    `json:"status,omitempty"`
	Error  string `json:"error,omitempty"`
	Ms     int64  `json:"ms"`
}

// Delivery statuses.
const (
	DeliveryPending   = "pending"
	DeliverySucceeded = "succeeded"
	DeliveryFailed    = "failed"
)

func newSecret() string {
	b := make([]byte, 32)
	rand.Read(b)
	return "whsec_" + base64.StdEncoding.EncodeToString(b)
}

func checkSecret(s string) error {
	key, err := SvixKey(s)
	if err != nil || !strings.HasPrefix(s, "whsec_") || len(key) < 24 || len(key) > 64 {
		return apierr.New(apierr.Invalid, "secret must be whsec_ followed by the base64 of 24 to 64 bytes")
	}
	return nil
}

func (o *outbound) checkURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil || len(raw) > 2048 {
		return apierr.New(apierr.Invalid, "url must be an absolute http or https URL without credentials, at most 2048 characters")
	}
	if o.cfg.AllowPrivate {
		return nil
	}
	host := u.Hostname()
	if ip, err := netip.ParseAddr(host); err == nil && !netguard.Public(ip) {
		return apierr.New(apierr.Invalid, "url points at a non-public address; private endpoints need --webhooks-allow-private")
	}
	if h := strings.ToLower(host); h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return apierr.New(apierr.Invalid, "url points at localhost; private endpoints need --webhooks-allow-private")
	}
	return nil
}

func checkEventTypes(ts []string) error {
	if len(ts) > 100 {
		return apierr.New(apierr.Invalid, "at most 100 event types")
	}
	for _, t := range ts {
		if t == "" || len(t) > 128 || strings.ContainsAny(t, " \t\n") {
			return apierr.New(apierr.Invalid, "event type %q: 1-128 characters without spaces", t)
		}
	}
	return nil
}

func endpointOut(t *dbv1.Thing, e *endpointJSON) *webhooksv1.Endpoint {
	return &webhooksv1.Endpoint{Id: t.Id, Url: e.URL, Description: e.Description, EventTypes: e.EventTypes, Namespace: e.Namespace,
		Disabled: e.Disabled, DisabledReason: e.DisabledReason, CreatedAt: t.CreatedAt / 1000, UpdatedAt: t.UpdatedAt / 1000}
}

// CreateEndpoint registers an endpoint and returns its secret, once.
func (s *Service) CreateEndpoint(ctx context.Context, req *connect.Request[webhooksv1.CreateEndpointRequest]) (*connect.Response[webhooksv1.EndpointResponse], error) {
	m := req.Msg
	if err := s.out.checkURL(m.Url); err != nil {
		return nil, err
	}
	if !thingsdb.ValidNamespace(m.Namespace) || thingsdb.IsSystemNamespace(m.Namespace) {
		return nil, apierr.New(apierr.Invalid, "namespace must be a tenant namespace")
	}
	if err := checkEventTypes(m.EventTypes); err != nil {
		return nil, err
	}
	if len(m.Description) > 500 {
		return nil, apierr.New(apierr.Invalid, "description is at most 500 characters")
	}
	secret := m.Secret
	if secret == "" {
		secret = newSecret()
	} else if err := checkSecret(secret); err != nil {
		return nil, err
	}
	e := &endpointJSON{URL: m.Url, Description: m.Description, EventTypes: m.EventTypes, Namespace: m.Namespace,
		Secrets: []sealedSecret{{Sealed: s.out.seal(secret)}}}
	if e.EventTypes == nil {
		e.EventTypes = []string{}
	}
	res, err := s.db.Put(ctx, connect.NewRequest(&dbv1.PutRequest{Write: &dbv1.Write{Ns: Namespace, Id: thingsdb.NewPrefixedID("ep_"), Type: typeEndpoint,
		Data: mustJSON(e), Condition: dbv1.Condition_CONDITION_MUST_NOT_EXIST}}))
	if err != nil {
		return nil, s.internal(ctx, "create endpoint", err)
	}
	s.ev.invalidate()
	return connect.NewResponse(&webhooksv1.EndpointResponse{Endpoint: endpointOut(res.Msg.Thing, e), Secret: secret}), nil
}

func (s *Service) endpoint(ctx context.Context, id string) (*dbv1.Thing, *endpointJSON, error) {
	var e endpointJSON
	t, err := s.get(ctx, Namespace, id, &e)
	if apierr.Is(err, apierr.NotFound) || apierr.Is(err, apierr.Invalid) || (err == nil && t.Type != typeEndpoint) {
		return nil, nil, apierr.New(apierr.NotFound, "endpoint %s not found", id)
	}
	return t, &e, err
}

// GetEndpoint returns one endpoint.
func (s *Service) GetEndpoint(ctx context.Context, req *connect.Request[webhooksv1.GetEndpointRequest]) (*connect.Response[webhooksv1.EndpointResponse], error) {
	t, e, err := s.endpoint(ctx, req.Msg.Id)
	if err != nil {
		return nil, s.internal(ctx, "get endpoint", err)
	}
	return connect.NewResponse(&webhooksv1.EndpointResponse{Endpoint: endpointOut(t, e)}), nil
}

// ListEndpoints lists the endpoints of a namespace (all when empty).
func (s *Service) ListEndpoints(ctx context.Context, req *connect.Request[webhooksv1.ListEndpointsRequest]) (*connect.Response[webhooksv1.ListEndpointsResponse], error) {
	m := req.Msg
	lr := &dbv1.ListRequest{Ns: Namespace, Type: typeEndpoint, Limit: m.Limit, Cursor: m.Cursor}
	if m.Namespace != "" {
		lr.Where = string(mustJSON(map[string]string{"namespace": m.Namespace}))
	}
	res, err := s.db.List(ctx, connect.NewRequest(lr))
	if err != nil {
		return nil, s.internal(ctx, "list endpoints", err)
	}
	out := &webhooksv1.ListEndpointsResponse{Endpoints: []*webhooksv1.Endpoint{}, NextCursor: res.Msg.NextCursor}
	for _, t := range res.Msg.Items {
		var e endpointJSON
		if json.Unmarshal(t.Data, &e) == nil {
			out.Endpoints = append(out.Endpoints, endpointOut(t, &e))
		}
	}
	return connect.NewResponse(out), nil
}

func (s *Service) saveEndpoint(ctx context.Context, t *dbv1.Thing, e *endpointJSON) (*dbv1.Thing, error) {
	res, err := s.db.Put(ctx, connect.NewRequest(&dbv1.PutRequest{Write: &dbv1.Write{Ns: Namespace, Id: t.Id, Type: typeEndpoint,
		Data: mustJSON(e), IfVersion: t.Version}}))
	if apierr.Is(err, apierr.PreconditionFailed) {
		return nil, apierr.New(apierr.Conflict, "endpoint %s changed meanwhile; retry", t.Id)
	}
	if err != nil {
		return nil, err
	}
	s.ev.invalidate()
	return res.Msg.Thing, nil
}

// UpdateEndpoint changes an endpoint's url, description, event types or
// disabled flag (re-enabling an endpoint a 410 disabled).
func (s *Service) UpdateEndpoint(ctx context.Context, req *connect.Request[webhooksv1.UpdateEndpointRequest]) (*connect.Response[webhooksv1.EndpointResponse], error) {
	m := req.Msg
	t, e, err := s.endpoint(ctx, m.Id)
	if err != nil {
		return nil, s.internal(ctx, "update endpoint", err)
	}
	if m.Url != nil {
		if err := s.out.checkURL(*m.Url); err != nil {
			return nil, err
		}
		e.URL = *m.Url
	}
	if m.Description != nil {
		if len(*m.Description) > 500 {
			return nil, apierr.New(apierr.Invalid, "description is at most 500 characters")
		}
		e.Description = *m.Description
	}
	if m.SetEventTypes {
		if err := checkEventTypes(m.EventTypes); err != nil {
			return nil, err
		}
		e.EventTypes = append([]string{}, m.EventTypes...)
	}
	if m.Disabled != nil {
		e.Disabled = *m.Disabled
		if !e.Disabled {
			e.DisabledReason = ""
		} else if e.DisabledReason == "" {
			e.DisabledReason = "disabled by an operator"
		}
	}
	nt, err := s.saveEndpoint(ctx, t, e)
	if err != nil {
		return nil, s.internal(ctx, "update endpoint", err)
	}
	return connect.NewResponse(&webhooksv1.EndpointResponse{Endpoint: endpointOut(nt, e)}), nil
}

// DeleteEndpoint removes an endpoint; its pending deliveries fail.
func (s *Service) DeleteEndpoint(ctx context.Context, req *connect.Request[webhooksv1.DeleteEndpointRequest]) (*connect.Response[webhooksv1.DeleteEndpointResponse], error) {
	if _, _, err := s.endpoint(ctx, req.Msg.Id); err != nil {
		return nil, s.internal(ctx, "delete endpoint", err)
	}
	if _, err := s.db.Delete(ctx, connect.NewRequest(&dbv1.DeleteRequest{Ns: Namespace, Id: req.Msg.Id})); err != nil && !apierr.Is(err, apierr.NotFound) {
		return nil, s.internal(ctx, "delete endpoint", err)
	}
	return connect.NewResponse(&webhooksv1.DeleteEndpointResponse{}), nil
}

// RotateSecret makes a new secret current. The previous one keeps signing
// beside it (space-separated signatures) until keep_old_seconds pass.
func (s *Service) RotateSecret(ctx context.Context, req *connect.Request[webhooksv1.RotateSecretRequest]) (*connect.Response[webhooksv1.EndpointResponse], error) {
	m := req.Msg
	t, e, err := s.endpoint(ctx, m.Id)
	if err != nil {
		return nil, s.internal(ctx, "rotate secret", err)
	}
	keep := time.Duration(m.KeepOldSeconds) * time.Second
	if m.KeepOldSeconds == 0 {
		keep = 24 * time.Hour
	}
	if keep < 0 || keep > 7*24*time.Hour {
		return nil, apierr.New(apierr.Invalid, "keep_old_seconds must be 0 to 604800")
	}
	now := s.Now()
	var kept []sealedSecret
	for _, sec := range e.Secrets {
		if sec.ExpiresAt == 0 {
			sec.ExpiresAt = now.Add(keep).UnixMilli()
		}
		if sec.ExpiresAt > now.UnixMilli() {
			kept = append(kept, sec)
		}
	}
	secret := newSecret()
	e.Secrets = append([]sealedSecret{{Sealed: s.out.seal(secret)}}, kept...)
	nt, err := s.saveEndpoint(ctx, t, e)
	if err != nil {
		return nil, s.internal(ctx, "rotate secret", err)
	}
	return connect.NewResponse(&webhooksv1.EndpointResponse{Endpoint: endpointOut(nt, e), Secret: secret}), nil
}

// Emit delivers a dotdo event to every enabled endpoint of the namespace
// that wants its type, as {type, timestamp, data}. It returns once the
// deliveries are stored and queued. Other services call it (or Publish).
func (s *Service) Emit(ctx context.Context, req *connect.Request[webhooksv1.EmitRequest]) (*connect.Response[webhooksv1.EmitResponse], error) {
	m := req.Msg
	if !thingsdb.ValidNamespace(m.Namespace) {
		return nil, apierr.New(apierr.Invalid, "namespace is not valid")
	}
	if err := checkEventTypes([]string{m.Type}); err != nil {
		return nil, err
	}
	data := json.RawMessage(m.Data)
	if len(data) == 0 {
		data = json.RawMessage("{}")
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal(data, &obj) != nil {
		return nil, apierr.New(apierr.Invalid, "data must be a JSON object")
	}
	now := s.Now()
	payload := mustJSON(struct {
		Type      string          `json:"type"`
		Timestamp string          `json:"timestamp"`
		Data      json.RawMessage `json:"data"`
	}{m.Type, now.UTC().Format(time.RFC3339Nano), data})
	if len(payload) > 200<<10 {
		return nil, apierr.New(apierr.TooLarge, "event payload larger than 200 KiB")
	}
	var ops []*dbv1.Op
	var msgs []queue.Outgoing
	ids := []string{}
	cursor := ""
	for {
		res, err := s.db.List(ctx, connect.NewRequest(&dbv1.ListRequest{Ns: Namespace, Type: typeEndpoint, Limit: 1000, Cursor: cursor,
			Where: string(mustJSON(map[string]any{"namespace": m.Namespace, "disabled": false}))}))
		if err != nil {
			return nil, s.internal(ctx, "emit", err)
		}
		for _, t := range res.Msg.Items {
			var e endpointJSON
			if json.Unmarshal(t.Data, &e) != nil || (len(e.EventTypes) > 0 && !slices.Contains(e.EventTypes, m.Type)) {
				continue
			}
			id := thingsdb.NewPrefixedID("msg_")
			d := deliveryJSON{EndpointID: t.Id, Namespace: m.Namespace, EventType: m.Type, Status: DeliveryPending,
				NextAttemptAt: now.UnixMilli(), Payload: payload, Log: []attemptLog{}}
			ops = append(ops, writeOp(id, typeDelivery, &d, dbv1.Condition_CONDITION_MUST_NOT_EXIST, 0, 0))
			msgs = append(msgs, queue.Outgoing{Body: []byte(id), ContentType: "text"})
			ids = append(ids, id)
		}
		if res.Msg.NextCursor == "" {
			break
		}
		cursor = res.Msg.NextCursor
	}
	for len(ops) > 0 {
		n := min(len(ops), 100)
		if err := s.batch(ctx, Namespace, ops[:n]...); err != nil {
			return nil, s.internal(ctx, "emit", err)
		}
		if _, err := s.queue.Send(ctx, OutboundQueue, msgs[:n]...); err != nil {
			return nil, s.internal(ctx, "emit", err)
		}
		ops, msgs = ops[n:], msgs[n:]
	}
	return connect.NewResponse(&webhooksv1.EmitResponse{DeliveryIds: ids}), nil
}

// Publish is Emit for Go callers: data is marshalled to JSON.
func (s *Service) Publish(ctx context.Context, ns, typ string, data any) ([]string, error) {
	b, err := json.Marshal(data)
	if err != nil {
		return nil, apierr.New(apierr.Invalid, "data: %v", err)
	}
	res, err := s.Emit(ctx, connect.NewRequest(&webhooksv1.EmitRequest{Namespace: ns, Type: typ, Data: b}))
	if err != nil {
		return nil, err
	}
	return res.Msg.DeliveryIds, nil
}

func deliveryOut(t *dbv1.Thing, d *deliveryJSON) *webhooksv1.Delivery {
	return &webhooksv1.Delivery{Id: t.Id, EndpointId: d.EndpointID, EventType: d.EventType, Status: d.Status, Attempts: int32(d.Attempts),
		NextAttemptAt: d.NextAttemptAt, LastStatusCode: int32(d.LastStatusCode), LastError: d.LastError, CreatedAt: t.CreatedAt / 1000,
		UpdatedAt: t.UpdatedAt / 1000, Payload: d.Payload, Namespace: d.Namespace}
}

func (s *Service) delivery(ctx context.Context, id string) (*dbv1.Thing, *deliveryJSON, error) {
	var d deliveryJSON
	t, err := s.get(ctx, Namespace, id, &d)
	if apierr.Is(err, apierr.NotFound) || apierr.Is(err, apierr.Invalid) || (err == nil && t.Type != typeDelivery) {
		return nil, nil, apierr.New(apierr.NotFound, "delivery %s not found", id)
	}
	return t, &d, err
}

// GetDelivery returns one delivery with its attempts.
func (s *Service) GetDelivery(ctx context.Context, req *connect.Request[webhooksv1.GetDeliveryRequest]) (*connect.Response[webhooksv1.DeliveryResponse], error) {
	t, d, err := s.delivery(ctx, req.Msg.Id)
	if err != nil {
		return nil, s.internal(ctx, "get delivery", err)
	}
	return connect.NewResponse(&webhooksv1.DeliveryResponse{Delivery: deliveryOut(t, d)}), nil
}

// DeliveryLog returns a delivery's attempts as JSON (for the REST view).
func DeliveryLog(t *dbv1.Thing) json.RawMessage {
	var d deliveryJSON
	json.Unmarshal(t.Data, &d)
	return mustJSON(d.Log)
}

// ListDeliveries lists an endpoint's deliveries, newest first.
func (s *Service) ListDeliveries(ctx context.Context, req *connect.Request[webhooksv1.ListDeliveriesRequest]) (*connect.Response[webhooksv1.ListDeliveriesResponse], error) {
	m := req.Msg
	where := map[string]string{}
	if m.EndpointId != "" {
		where["endpointId"] = m.EndpointId
	}
	if m.Status != "" {
		if m.Status != DeliveryPending && m.Status != DeliverySucceeded && m.Status != DeliveryFailed {
			return nil, apierr.New(apierr.Invalid, "status must be pending, succeeded or failed")
		}
		where["status"] = m.Status
	}
	lr := &dbv1.ListRequest{Ns: Namespace, Type: typeDelivery, Order: "-createdAt", Limit: m.Limit, Cursor: m.Cursor}
	if len(where) > 0 {
		lr.Where = string(mustJSON(where))
	}
	res, err := s.db.List(ctx, connect.NewRequest(lr))
	if err != nil {
		return nil, s.internal(ctx, "list deliveries", err)
	}
	out := &webhooksv1.ListDeliveriesResponse{Deliveries: []*webhooksv1.Delivery{}, NextCursor: res.Msg.NextCursor}
	for _, t := range res.Msg.Items {
		var d deliveryJSON
		if json.Unmarshal(t.Data, &d) == nil {
			out.Deliveries = append(out.Deliveries, deliveryOut(t, &d))
		}
	}
	return connect.NewResponse(out), nil
}

// RetryDelivery sends a delivery again now, whatever its status; its
// attempts start over on the schedule.
func (s *Service) RetryDelivery(ctx context.Context, req *connect.Request[webhooksv1.RetryDeliveryRequest]) (*connect.Response[webhooksv1.DeliveryResponse], error) {
	t, d, err := s.delivery(ctx, req.Msg.Id)
	if err != nil {
		return nil, s.internal(ctx, "retry delivery", err)
	}
	d.Status, d.Attempts, d.NextAttemptAt = DeliveryPending, 0, s.Now().UnixMilli()
	res, err := s.db.Put(ctx, connect.NewRequest(&dbv1.PutRequest{Write: &dbv1.Write{Ns: Namespace, Id: t.Id, Type: typeDelivery, Data: mustJSON(d), IfVersion: t.Version}}))
	if apierr.Is(err, apierr.PreconditionFailed) {
		return nil, apierr.New(apierr.Conflict, "delivery %s changed meanwhile; retry", t.Id)
	}
	if err != nil {
		return nil, s.internal(ctx, "retry delivery", err)
	}
	if _, err := s.queue.Send(ctx, OutboundQueue, queue.Outgoing{Body: []byte(t.Id), ContentType: "text"}); err != nil {
		return nil, s.internal(ctx, "retry delivery", err)
	}
	return connect.NewResponse(&webhooksv1.DeliveryResponse{Delivery: deliveryOut(res.Msg.Thing, d)}), nil
}

// consume runs deliveries from the outbound queue.
func (o *outbound) consume(ctx context.Context, b *queue.Batch) error {
	for _, m := range b.Messages {
		delay, err := o.Deliver(ctx, string(m.Body))
		switch {
		case err != nil:
			o.s.log.WarnContext(ctx, "outbound delivery", "id", string(m.Body), "err", err)
			m.Retry(5 * time.Second)
		case delay > 0:
			m.Retry(min(delay, queue.MaxDelay))
		default:
			m.Ack()
		}
	}
	return nil
}

// Deliver makes the delivery's next attempt if it is due and returns how
// long until the one after (0 when the delivery is finished). An error
// means the store failed and the attempt should be made again.
func (o *outbound) Deliver(ctx context.Context, id string) (time.Duration, error) {
	s := o.s
	t, d, err := s.delivery(ctx, id)
	if apierr.Is(err, apierr.NotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	if d.Status != DeliveryPending {
		return 0, nil
	}
	now := s.Now()
	if wait := time.UnixMilli(d.NextAttemptAt).Sub(now); wait > 0 {
		return wait, nil
	}
	et, e, err := s.endpoint(ctx, d.EndpointID)
	if apierr.Is(err, apierr.NotFound) {
		d.Status, d.LastError = DeliveryFailed, "endpoint deleted"
		return 0, o.save(ctx, t, d)
	}
	if err != nil {
		return 0, err
	}
	if e.Disabled {
		d.Status, d.LastError = DeliveryFailed, "endpoint disabled: "+e.DisabledReason
		return 0, o.save(ctx, t, d)
	}
	code, retryAfter, aerr := o.attempt(ctx, id, e, d.Payload, now)
	d.Attempts++
	d.LastStatusCode, d.LastError = code, ""
	if aerr != nil {
		d.LastError = trimReason(aerr.Error())
	}
	entry := attemptLog{At: now.UnixMilli(), Status: code, Error: d.LastError, Ms: s.Now().Sub(now).Milliseconds()}
	d.Log = append(d.Log, entry)
	if len(d.Log) > 20 {
		d.Log = d.Log[len(d.Log)-20:]
	}
	var next time.Duration
	result := "retry"
	defer func() { s.metrics.outbound.WithLabelValues(result).Inc() }()
	switch {
	case aerr == nil && code >= 200 && code < 300:
		d.Status, result = DeliverySucceeded, "succeeded"
	case code == http.StatusGone:
		d.Status, result = DeliveryFailed, "gone"
		e.Disabled, e.DisabledReason = true, "the endpoint answered 410 Gone"
		if _, err := s.saveEndpoint(ctx, et, e); err != nil {
			return 0, err
		}
	case d.Attempts >= len(Schedule):
		d.Status, result = DeliveryFailed, "failed"
	default:
		next = Schedule[d.Attempts]
		if retryAfter > next {
			next = min(retryAfter, 24*time.Hour)
		}
		d.NextAttemptAt = now.Add(next).UnixMilli()
	}
	return next, o.save(ctx, t, d)
}

func (o *outbound) save(ctx context.Context, t *dbv1.Thing, d *deliveryJSON) error {
	_, err := o.s.db.Put(ctx, connect.NewRequest(&dbv1.PutRequest{Write: &dbv1.Write{Ns: Namespace, Id: t.Id, Type: typeDelivery, Data: mustJSON(d), IfVersion: t.Version}}))
	if apierr.Is(err, apierr.PreconditionFailed) {
		return nil // a manual retry changed it; that one goes on
	}
	return err
}

// attempt POSTs the payload, signed with every live secret.
func (o *outbound) attempt(ctx context.Context, id string, e *endpointJSON, payload []byte, now time.Time) (int, time.Duration, error) {
	ts := now.Unix()
	var sigs []string
	for _, sec := range e.Secrets {
		if sec.ExpiresAt != 0 && sec.ExpiresAt <= now.UnixMilli() {
			continue
		}
		secret, err := o.open(sec.Sealed)
		if err != nil {
			continue // sealed under another key: rotate the secret
		}
		sig, err := SignSvix(secret, id, ts, payload)
		if err != nil {
			continue
		}
		sigs = append(sigs, sig)
	}
	if len(sigs) == 0 {
		return 0, 0, errors.New("no endpoint secret can be unsealed (was DOTDO_SECRET_KEY changed?); rotate the endpoint's secret")
	}
	ctx, cancel := context.WithTimeout(ctx, o.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.URL, bytes.NewReader(payload))
	if err != nil {
		return 0, 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "dotdo-webhooks/1")
	req.Header.Set("webhook-id", id)
	req.Header.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
	req.Header.Set("webhook-signature", strings.Join(sigs, " "))
	res, err := o.client.Do(req)
	if err != nil {
		return 0, 0, errors.New(strings.ReplaceAll(err.Error(), e.URL, "endpoint"))
	}
	defer res.Body.Close()
	io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
	retryAfter := parseRetryAfter(res.Header.Get("Retry-After"), now)
	if res.StatusCode < 200 || res.StatusCode > 299 {
		return res.StatusCode, retryAfter, fmt.Errorf("endpoint answered %d", res.StatusCode)
	}
	return res.StatusCode, 0, nil
}

// parseRetryAfter reads a Retry-After value, delay-seconds or an HTTP date,
// as a delay from now; 0 when absent, malformed or past. It is capped at
// a day.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	var d time.Duration
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n <= 0 {
			return 0
		}
		d = time.Duration(min(n, 86400)) * time.Second
	} else if at, err := http.ParseTime(v); err == nil {
		d = at.Sub(now)
	}
	return max(0, min(d, 24*time.Hour))
}
