package queue

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/dotdo/dotdo/internal/apierr"
	queuev1 "github.com/dotdo/dotdo/internal/gen/dotdo/queue/v1"
	"github.com/dotdo/dotdo/internal/gen/dotdo/queue/v1/queuev1connect"
)

// restServer serves the routes; the X-Perms header lists the caller's
// permissions (a stand-in for the gateway's identity, checked by the real
// Authorize contract: error to answer, or nil).
func restServer(t *testing.T, s *Service) *httptest.Server {
	mux := http.NewServeMux()
	Routes(mux, s, RouteOptions{Authorize: func(r *http.Request, ns, perm string) error {
		perms := r.Header.Get("X-Perms")
		if perms == "" {
			return apierr.New(apierr.Unauthenticated, "authentication required")
		}
		if IsSystem(ns) && perms != "*" {
			return apierr.New(apierr.Forbidden, "queue %s is a system queue", ns)
		}
		if perms == "*" || strings.Contains(perms, perm) {
			return nil
		}
		return apierr.New(apierr.Forbidden, "missing permission %s on namespace %s", perm, ns)
	}})
	path, h := queuev1connect.NewQueueServiceHandler(RPC{s})
	mux.Handle(path, h)
	srv := httptest.NewServer(http.MaxBytesHandler(mux, 1<<20))
	t.Cleanup(srv.Close)
	return srv
}

type call struct {
	t     *testing.T
	base  string
	perms string
}

func (c call) do(method, path, body string) (int, map[string]any) {
	c.t.Helper()
	req, _ := http.NewRequest(method, c.base+path, strings.NewReader(body))
	if c.perms != "" {
		req.Header.Set("X-Perms", c.perms)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	var out map[string]any
	if len(b) > 0 {
		if err := json.Unmarshal(b, &out); err != nil {
			c.t.Fatalf("%s %s: %d %s", method, path, res.StatusCode, b)
		}
	}
	return res.StatusCode, out
}

func (c call) want(status int, method, path, body string) map[string]any {
	c.t.Helper()
	got, out := c.do(method, path, body)
	if got != status {
		c.t.Fatalf("%s %s %s: %d %v, want %d", method, path, body, got, out, status)
	}
	if status >= 400 {
		e, _ := out["error"].(map[string]any)
		if e == nil || e["code"] == "" || e["message"] == "" {
			c.t.Fatalf("%s %s: no error envelope: %v", method, path, out)
		}
	}
	return out
}

func TestREST(t *testing.T) {
	engines(t, func(t *testing.T, s *Service) {
		srv := restServer(t, s)
		admin := call{t, srv.URL, "*"}
		out := admin.want(201, "PUT", "/v1/queues/jobs", `{"max_batch_size":5,"max_batch_timeout":0.5,"max_retries":2,"retry_delay":1,"dead_letter_queue":"jobs-dlq","message_retention_period":3600}`)
		if out["max_batch_size"] != 5.0 || out["max_batch_timeout"] != 0.5 || out["dead_letter_queue"] != "jobs-dlq" || out["message_retention_period"] != 3600.0 {
			t.Fatalf("settings %v", out)
		}
		admin.want(200, "PUT", "/v1/queues/jobs", `{"max_batch_size":5,"max_batch_timeout":0.5,"max_retries":2,"dead_letter_queue":"jobs-dlq"}`)
		if out := admin.want(201, "PUT", "/v1/queues/plain", ``); out["max_batch_size"] != 10.0 || out["max_retries"] != 3.0 || out["max_batch_timeout"] != 5.0 || out["message_retention_period"] != 345600.0 {
			t.Fatalf("defaults %v", out)
		}
		if out := admin.want(200, "GET", "/v1/queues", ``); len(out["queues"].([]any)) != 2 {
			t.Fatalf("list %v", out)
		}
		admin.want(200, "GET", "/v1/queues/jobs", ``)

		// Bad settings: 400, nothing created or changed.
		for _, body := range []string{`{"max_batch_size":0}`, `{"max_batch_size":101}`, `{"max_batch_timeout":61}`, `{"max_retries":-1}`, `{"max_retries":101}`,
			`{"retry_delay":43201}`, `{"delivery_delay":-1}`, `{"message_retention_period":59}`, `{"message_retention_period":1209601}`,
			`{"dead_letter_queue":"bad"}`, `{"dead_letter_queue":"Nope"}`, `{"nope":1}`, `[]`, `{"max_batch_size":"5"}`, `{"paused":true}`, `{"name":"other"}`} {
			admin.want(400, "PUT", "/v1/queues/bad", body)
		}
		admin.want(400, "PUT", "/v1/queues/Bad", `{}`)
		admin.want(404, "GET", "/v1/queues/bad", ``)

		// Send: one, a batch, the three content types, delays.
		out = admin.want(201, "POST", "/v1/queues/jobs/messages", `{"body":{"hello":"world"}}`)
		if id, _ := out["id"].(string); len(id) != 32 {
			t.Fatalf("send %v", out)
		}
		out = admin.want(201, "POST", "/v1/queues/jobs/messages/batch", `{"messages":[{"body":"hi","content_type":"text"},{"body":"AAEC","content_type":"bytes"},{"body":[1,2]}]}`)
		if len(out["ids"].([]any)) != 3 {
			t.Fatalf("batch %v", out)
		}
		admin.want(201, "POST", "/v1/queues/jobs/messages/batch", `{"messages":[{"body":1},{"body":2,"delay_seconds":0}],"delay_seconds":3600}`)

		// Bad messages: the right status, nothing enqueued from the batch.
		big := `"` + strings.Repeat("a", 128<<10) + `"`
		half := `"` + strings.Repeat("a", 100<<10) + `"`
		many := strings.TrimSuffix(strings.Repeat(`{"body":1},`, 101), ",")
		for _, c := range []struct {
			status int
			path   string
			body   string
		}{
			{413, "/v1/queues/jobs/messages", `{"body":` + big + `}`},
			{413, "/v1/queues/jobs/messages/batch", `{"messages":[{"body":1},{"body":` + big + `}]}`},
			{413, "/v1/queues/jobs/messages/batch", `{"messages":[{"body":` + half + `},{"body":` + half + `},{"body":` + half + `}]}`},
			{413, "/v1/queues/jobs/messages/batch", `{"messages":[{"body":"` + strings.Repeat("a", 2<<20) + `"}]}`},
			{400, "/v1/queues/jobs/messages/batch", `{"messages":[` + many + `]}`},
			{400, "/v1/queues/jobs/messages/batch", `{"messages":[]}`},
			{400, "/v1/queues/jobs/messages/batch", `{"messages":[{"body":1},{"body":1,"delay_seconds":43201}]}`},
			{400, "/v1/queues/jobs/messages/batch", `{"messages":[{"body":1}],"delay_seconds":-1}`},
			{400, "/v1/queues/jobs/messages/batch", `{"messages":[{"body":1},{"body":1,"content_type":"xml"}]}`},
			{400, "/v1/queues/jobs/messages/batch", `{"messages":[{"body":1},{"body":1,"content_type":"text"}]}`},
			{400, "/v1/queues/jobs/messages/batch", `{"messages":[{"body":1},{"body":"%%%","content_type":"bytes"}]}`},
			{400, "/v1/queues/jobs/messages", `{"body":1,"extra":true}`},
			{400, "/v1/queues/jobs/messages", `{}`},
			{400, "/v1/queues/jobs/messages", ``},
			{400, "/v1/queues/jobs/messages", `{"body":1}{"body":2}`},
			{404, "/v1/queues/nope/messages", `{"body":1}`},
			{404, "/v1/queues/nope/messages/batch", `{"messages":[{"body":1}]}`},
		} {
			admin.want(c.status, "POST", c.path, c.body)
		}
		st, _ := s.Stats(context.Background(), "jobs")
		if st.Backlog != 5 || st.Delayed != 1 {
			t.Fatalf("after rejected batches: backlog %d delayed %d, want 5 and 1", st.Backlog, st.Delayed)
		}

		// Pull and ack with Cloudflare's shapes.
		out = admin.want(200, "POST", "/v1/queues/jobs/messages/pull", `{"batch_size":10,"visibility_timeout_ms":60000}`)
		msgs := out["messages"].([]any)
		if len(msgs) != 5 {
			t.Fatalf("pulled %d: %v", len(msgs), out)
		}
		bodies := map[string]any{}
		var leases []string
		for _, m := range msgs {
			m := m.(map[string]any)
			for _, k := range []string{"id", "lease_id", "timestamp_ms", "attempts", "body", "content_type"} {
				if _, ok := m[k]; !ok {
					t.Fatalf("pulled message without %s: %v", k, m)
				}
			}
			bodies[fmt.Sprint(m["content_type"], " ", m["body"])] = true
			leases = append(leases, m["lease_id"].(string))
		}
		for _, w := range []string{"json map[hello:world]", "text hi", "bytes " + base64.StdEncoding.EncodeToString([]byte{0, 1, 2}), "json [1 2]", "json 2"} {
			if bodies[w] == nil {
				t.Errorf("pulled bodies %v lack %q", bodies, w)
			}
		}
		admin.want(400, "POST", "/v1/queues/jobs/messages/ack", `{"acks":[{"lease_id":"forged"}]}`)
		admin.want(400, "POST", "/v1/queues/jobs/messages/ack", `{}`)
		admin.want(400, "POST", "/v1/queues/jobs/messages/pull", `{"batch_size":101}`)
		admin.want(400, "POST", "/v1/queues/jobs/messages/pull", `{"visibility_timeout_ms":43200001}`)
		ack := fmt.Sprintf(`{"acks":[{"lease_id":%q},{"lease_id":%q},{"lease_id":%q},{"lease_id":%q}],"retries":[{"lease_id":%q,"delay_seconds":0}]}`, leases[0], leases[1], leases[2], leases[3], leases[4])
		out = admin.want(200, "POST", "/v1/queues/jobs/messages/ack", ack)
		if out["ackCount"] != 4.0 || out["retryCount"] != 1.0 {
			t.Fatalf("ack %v", out)
		}
		// The retried one (retry_delay 1 s) comes back with attempts 2.
		var again []any
		for range 50 {
			out = admin.want(200, "POST", "/v1/queues/jobs/messages/pull", ``)
			if again = out["messages"].([]any); len(again) > 0 {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if len(again) != 1 || again[0].(map[string]any)["attempts"] != 2.0 {
			t.Fatalf("retried message: %v", again)
		}

		// Operations.
		out = admin.want(200, "GET", "/v1/queues/jobs/stats", ``)
		for _, k := range []string{"backlog", "in_flight", "delayed", "dead_letter_depth", "oldest_message_age_ms", "delivered", "paused", "process"} {
			if _, ok := out[k]; !ok {
				t.Errorf("stats without %s: %v", k, out)
			}
		}
		if out := admin.want(200, "POST", "/v1/queues/jobs/pause", ``); out["paused"] != true {
			t.Fatalf("pause %v", out)
		}
		admin.want(200, "POST", "/v1/queues/jobs/resume", ``)
		admin.want(200, "POST", "/v1/queues/jobs/purge", ``)
		if out := admin.want(200, "GET", "/v1/queues/jobs/stats", ``); out["backlog"] != 0.0 || out["delayed"] != 0.0 {
			t.Fatalf("after purge %v", out)
		}

		// Permissions: send, consume and manage are separate; system queues
		// are closed to tenants, also as dead-letter queues.
		if err := s.EnsureQueue(context.Background(), Defaults("_system")); err != nil {
			t.Fatal(err)
		}
		sender := call{t, srv.URL, "queue:send"}
		consumer := call{t, srv.URL, "queue:consume"}
		anon := call{t, srv.URL, ""}
		sender.want(201, "POST", "/v1/queues/plain/messages", `{"body":1}`)
		sender.want(403, "POST", "/v1/queues/plain/messages/pull", `{}`)
		sender.want(403, "PUT", "/v1/queues/plain", `{}`)
		sender.want(403, "POST", "/v1/queues/_system/messages", `{"body":1}`)
		consumer.want(200, "POST", "/v1/queues/plain/messages/pull", `{}`)
		consumer.want(403, "POST", "/v1/queues/plain/messages", `{"body":1}`)
		consumer.want(403, "DELETE", "/v1/queues/plain", ``)
		anon.want(401, "POST", "/v1/queues/plain/messages", `{"body":1}`)
		anon.want(401, "GET", "/v1/queues", ``)
		manager := call{t, srv.URL, "queue:manage"}
		manager.want(403, "PUT", "/v1/queues/mine", `{"dead_letter_queue":"_system"}`)
		manager.want(404, "GET", "/v1/queues/mine", ``)
		if out := manager.want(200, "GET", "/v1/queues", ``); strings.Contains(fmt.Sprint(out), "_system") {
			t.Fatalf("tenant sees a system queue: %v", out)
		}
		manager.want(403, "GET", "/v1/queues/_system", ``)
		admin.want(204, "DELETE", "/v1/queues/plain", ``)
		admin.want(404, "DELETE", "/v1/queues/plain", ``)
	})
}

func TestRPC(t *testing.T) {
	s := openEmbedded(t)
	srv := restServer(t, s)
	c := queuev1connect.NewQueueServiceClient(http.DefaultClient, srv.URL)
	ctx := context.Background()
	if l, err := c.ListQueues(ctx, connect.NewRequest(&queuev1.ListQueuesRequest{})); err != nil || len(l.Msg.Queues) != 0 {
		t.Fatalf("list with no queues: %v %v", l, err)
	}
	put, err := c.PutQueue(ctx, connect.NewRequest(&queuev1.PutQueueRequest{Settings: &queuev1.Settings{Name: "rpc"}, UseDefaults: true}))
	if err != nil || put.Msg.Settings.MaxRetries != 3 || put.Msg.Settings.MaxBatchTimeoutMs != 5000 {
		t.Fatalf("put %v %v", put, err)
	}
	sent, err := c.Send(ctx, connect.NewRequest(&queuev1.SendRequest{Queue: "rpc", Messages: []*queuev1.OutgoingMessage{{Body: []byte(`{"a":1}`)}, {Body: []byte("x"), ContentType: "text"}}}))
	if err != nil || len(sent.Msg.Ids) != 2 {
		t.Fatalf("send %v %v", sent, err)
	}
	_, err = c.Send(ctx, connect.NewRequest(&queuev1.SendRequest{Queue: "nope", Messages: []*queuev1.OutgoingMessage{{Body: []byte(`1`)}}}))
	if !apierr.Is(apierr.From(err), apierr.NotFound) {
		t.Fatalf("send to unknown queue: %v", err)
	}
	_, err = c.Send(ctx, connect.NewRequest(&queuev1.SendRequest{Queue: "rpc", Messages: []*queuev1.OutgoingMessage{{Body: make([]byte, 129<<10), ContentType: "bytes"}}}))
	if !apierr.Is(apierr.From(err), apierr.TooLarge) {
		t.Fatalf("send too large: %v", err)
	}
	pulled, err := c.Pull(ctx, connect.NewRequest(&queuev1.PullRequest{Queue: "rpc", BatchSize: 10}))
	if err != nil || len(pulled.Msg.Messages) != 2 {
		t.Fatalf("pull %v %v", pulled, err)
	}
	ack, err := c.Ack(ctx, connect.NewRequest(&queuev1.AckRequest{Queue: "rpc", Acks: []string{pulled.Msg.Messages[0].LeaseId, pulled.Msg.Messages[1].LeaseId}}))
	if err != nil || ack.Msg.AckCount != 2 {
		t.Fatalf("ack %v %v", ack, err)
	}
	st, err := c.Stats(ctx, connect.NewRequest(&queuev1.StatsRequest{Queue: "rpc"}))
	if err != nil || st.Msg.Backlog != 0 || st.Msg.Acked != 2 {
		t.Fatalf("stats %v %v", st, err)
	}
	if _, err := c.Health(ctx, connect.NewRequest(&queuev1.HealthRequest{})); err != nil {
		t.Fatal(err)
	}
}

func FuzzParseMessages(f *testing.F) {
	for _, s := range []string{`{"body":1}`, `{"body":"aGk=","content_type":"bytes","delay_seconds":5}`, `{"messages":[{"body":"x","content_type":"text"}],"delay_seconds":1}`,
		`{"messages":[]}`, `{}`, ``, `{"body":`, `{"messages":[{"body":1,"delay_seconds":-1}]}`, `{"body":null}`} {
		f.Add([]byte(s), true)
		f.Add([]byte(s), false)
	}
	f.Fuzz(func(t *testing.T, b []byte, batch bool) {
		msgs, err := ParseMessages(b, batch)
		if err != nil {
			if e := apierr.From(err); e.Code != apierr.Invalid {
				t.Fatalf("error %v is not invalid", err)
			}
			return
		}
		if len(msgs) == 0 || len(msgs) > MaxBatchMessages {
			t.Fatalf("%d messages", len(msgs))
		}
		for _, m := range msgs {
			if m.Delay < 0 || m.Delay > MaxDelay {
				t.Fatalf("delay %s", m.Delay)
			}
			if m.ContentType == "json" && !json.Valid(m.Body) {
				t.Fatalf("accepted invalid JSON body %q", m.Body)
			}
		}
	})
}

func FuzzParseSettings(f *testing.F) {
	for _, s := range []string{``, `{}`, `{"max_batch_size":5,"max_batch_timeout":0.5,"max_retries":2,"retry_delay":1,"dead_letter_queue":"d","message_retention_period":3600}`,
		`{"max_batch_timeout":1e309}`, `{"max_batch_timeout":-0}`, `{"dead_letter_queue":"q"}`, `{"paused":false}`, `[`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := ParseSettings("q", b)
		if err != nil {
			if e := apierr.From(err); e.Code != apierr.Invalid {
				t.Fatalf("error %v is not invalid", err)
			}
			return
		}
		if err := st.normalize(); err != nil {
			t.Fatalf("accepted settings fail normalize: %v", err)
		}
	})
}

func FuzzParseAck(f *testing.F) {
	for _, s := range []string{`{"acks":[{"lease_id":"a"}]}`, `{"retries":[{"lease_id":"a","delay_seconds":3}]}`, `{}`, `{"acks":[{}]}`, `x`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		acks, retries, err := ParseAck(b)
		if err == nil && len(acks)+len(retries) == 0 {
			t.Fatal("accepted an empty ack")
		}
	})
}

func FuzzParseLease(f *testing.F) {
	s := &Service{cfg: Config{Prefix: "DOTDO"}}
	good := base64.RawURLEncoding.EncodeToString([]byte("$JS.ACK.DOTDO_Q_q.consumer.1.2.3.4.0"))
	for _, v := range []string{good, "", "garbage", base64.RawURLEncoding.EncodeToString([]byte("$JS.ACK.DOTDO_Q_other.consumer.1.2.3.4.0")),
		base64.RawURLEncoding.EncodeToString([]byte("$JS.ACK.dom.hash.DOTDO_Q_q.consumer.1.2.3.4.0.tok"))} {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, id string) {
		tok, err := s.parseLease("q", id)
		if err != nil {
			return
		}
		if !strings.HasPrefix(tok.reply, "$JS.ACK.") || tok.stream != "DOTDO_Q_q" {
			t.Fatalf("accepted lease %q as %+v", id, tok)
		}
	})
}

func TestMetrics(t *testing.T) {
	s := openEmbedded(t)
	reg := prometheus.NewRegistry()
	if err := reg.Register(s.Collector()); err != nil {
		t.Fatal(err)
	}
	ensure(t, s, Defaults("m"))
	send(t, s, "m", js("1"), js("2"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	s.Consume(ctx, "m", func(ctx context.Context, b *Batch) error {
		if len(b.Messages) == 2 {
			close(done)
		}
		return nil
	})
	<-done
	ensure(t, s, Defaults("idle"))
	send(t, s, "idle", js("3"))
	// gather returns name{label values} -> value.
	gather := func() map[string]float64 {
		out := map[string]float64{}
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				var labels []string
				for _, l := range m.GetLabel() {
					labels = append(labels, l.GetName()+"="+l.GetValue())
				}
				v := m.GetCounter().GetValue() + m.GetGauge().GetValue()
				out[mf.GetName()+"{"+strings.Join(labels, ",")+"}"] = v
			}
		}
		return out
	}
	want := map[string]float64{
		"dotdo_queue_messages_total{event=acked,queue=m}":     2,
		"dotdo_queue_messages_total{event=delivered,queue=m}": 2,
		"dotdo_queue_messages_total{event=sent,queue=m}":      2,
		"dotdo_queue_messages_total{event=retried,queue=m}":   0,
		"dotdo_queue_messages_total{event=sent,queue=idle}":   1,
		"dotdo_queue_backlog{queue=m}":                        0,
		"dotdo_queue_backlog{queue=idle}":                     1,
		"dotdo_queue_in_flight{queue=m}":                      0,
	}
	var got map[string]float64
	deadline := time.Now().Add(10 * time.Second)
	for {
		got = gather()
		ok := true
		for k, v := range want {
			if g, found := got[k]; !found || g != v {
				ok = false
			}
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics %v, want %v", got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got["dotdo_queue_oldest_message_age_seconds{queue=idle}"] <= 0 {
		t.Errorf("oldest message age %v", got["dotdo_queue_oldest_message_age_seconds{queue=idle}"])
	}
}
