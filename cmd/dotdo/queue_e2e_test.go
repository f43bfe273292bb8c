//go:build unix

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dotdo/dotdo/internal/thingsdb"
)

// pulledMsg is a message as POST .../messages/pull returns it.
type pulledMsg struct {
	ID       string          `json:"id"`
	LeaseID  string          `json:"lease_id"`
	Attempts int             `json:"attempts"`
	Body     json.RawMessage `json:"body"`
}

func pullQueue(t *testing.T, base, queue string, n int, visibilityMS int) []pulledMsg {
	t.Helper()
	res := do(t, "POST", base+"/v1/queues/"+queue+"/messages/pull", fmt.Sprintf(`{"batch_size":%d,"visibility_timeout_ms":%d}`, n, visibilityMS))
	if res.status != 200 {
		t.Fatalf("pull: %d %s", res.status, res.body)
	}
	var out struct{ Messages []pulledMsg }
	if err := json.Unmarshal(res.body, &out); err != nil {
		t.Fatal(err)
	}
	return out.Messages
}

func ackQueue(t *testing.T, base, queue string, leases []string) {
	t.Helper()
	var acks []string
	for _, l := range leases {
		acks = append(acks, fmt.Sprintf(`{"lease_id":%q}`, l))
	}
	res := do(t, "POST", base+"/v1/queues/"+queue+"/messages/ack", `{"acks":[`+strings.Join(acks, ",")+`]}`)
	if res.status != 200 {
		t.Fatalf("ack: %d %s", res.status, res.body)
	}
	var out struct{ AckCount int }
	json.Unmarshal(res.body, &out)
	if out.AckCount != len(leases) {
		t.Fatalf("ack: %s, want %d acked", res.body, len(leases))
	}
}

// sendQueue sends n numbered JSON messages in batches and returns their ids.
func sendQueue(t *testing.T, base, queue string, from, n int) map[string]int {
	t.Helper()
	ids := map[string]int{}
	for i := from; i < from+n; i += 50 {
		var msgs []string
		for j := i; j < min(i+50, from+n); j++ {
			msgs = append(msgs, fmt.Sprintf(`{"body":%d}`, j))
		}
		res := do(t, "POST", base+"/v1/queues/"+queue+"/messages/batch", `{"messages":[`+strings.Join(msgs, ",")+`]}`)
		if res.status != 201 {
			t.Fatalf("send: %d %s", res.status, res.body)
		}
		var out struct{ IDs []string }
		json.Unmarshal(res.body, &out)
		for k, id := range out.IDs {
			ids[id] = i + k
		}
	}
	return ids
}

// TestQueueE2EConsumerKilled: a pull consumer process leases a batch, acks
// part of it and is killed (SIGKILL) mid-batch. The messages it acked are
// gone; the ones it held come back after their visibility timeout with
// attempts 2; nothing is lost.
func TestQueueE2EConsumerKilled(t *testing.T) {
	queueEngines(t, func(t *testing.T, extra []string) { consumerKilled(t, extra) })
}

// queueEngines runs f with the embedded NATS and, when DOTDO_TEST_NATS_URL
// is set, with that NATS under a queue prefix of the test's own (whose
// streams are deleted afterwards); extra are the serve flags for it.
func queueEngines(t *testing.T, f func(t *testing.T, extra []string)) {
	t.Run("embedded", func(t *testing.T) { f(t, nil) })
	if url := os.Getenv("DOTDO_TEST_NATS_URL"); url != "" {
		t.Run("external", func(t *testing.T) { f(t, externalQueue(t, url)) })
	}
}

func externalQueue(t *testing.T, url string) []string {
	prefix := "DOTDOE2E" + strings.ToUpper(randHex(4))
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatalf("DOTDO_TEST_NATS_URL=%s: %v", url, err)
	}
	t.Cleanup(func() {
		defer nc.Close()
		js, _ := jetstream.New(nc)
		ctx := context.Background()
		for name := range js.StreamNames(ctx).Name() {
			if strings.HasPrefix(name, prefix+"_") || name == "KV_"+prefix+"_queues" {
				js.DeleteStream(ctx, name)
			}
		}
	})
	return []string{"--nats-url", url, "--queue-prefix", prefix}
}

func consumerKilled(t *testing.T, extra []string) {
	p := startAllInOne(t, newBackend(t, thingsdb.SQLite), extra...)
	if res := do(t, "PUT", p.url+"/v1/queues/work", `{}`); res.status != 201 {
		t.Fatalf("create queue: %d %s", res.status, res.body)
	}
	sent := sendQueue(t, p.url, "work", 0, 100)

	// The consumer is this test binary in another process.
	cmd := exec.Command(os.Args[0], "-test.run=^TestQueueE2EConsumerProcess$", "-test.v")
	cmd.Env = append(os.Environ(), "DOTDO_E2E_QUEUE_CONSUMER="+p.url)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	acked := map[string]bool{}
	held := map[string]bool{}
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line := sc.Text()
		if id, ok := strings.CutPrefix(line, "ACKED "); ok {
			acked[id] = true
		} else if id, ok := strings.CutPrefix(line, "HELD "); ok {
			held[id] = true
		} else if line == "MID-BATCH" {
			break
		}
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	killed := time.Now()
	if len(acked) != 5 || len(held) != 5 {
		t.Fatalf("consumer acked %d and held %d before it was killed; want 5 and 5", len(acked), len(held))
	}

	// Everything else is delivered once now; the held ones after their 3 s
	// visibility timeout, with attempts 2.
	got := map[string]int{}
	deadline := time.Now().Add(30 * time.Second)
	for len(got) < len(sent)-len(acked) && time.Now().Before(deadline) {
		msgs := pullQueue(t, p.url, "work", 100, 60000)
		var leases []string
		for _, m := range msgs {
			if acked[m.ID] {
				t.Fatalf("message %s acked by the killed consumer came back", m.ID)
			}
			if held[m.ID] {
				if m.Attempts != 2 {
					t.Errorf("held message %s: attempts %d, want 2", m.ID, m.Attempts)
				}
				if d := time.Since(killed); d > 5*time.Second {
					t.Errorf("held message back %s after the kill; visibility timeout was 3 s", d)
				}
			} else if m.Attempts != 1 {
				t.Errorf("message %s: attempts %d, want 1", m.ID, m.Attempts)
			}
			got[m.ID]++
			leases = append(leases, m.LeaseID)
		}
		if len(leases) > 0 {
			ackQueue(t, p.url, "work", leases)
		} else {
			time.Sleep(100 * time.Millisecond)
		}
	}
	for id := range sent {
		if !acked[id] && got[id] != 1 {
			t.Errorf("message %s delivered %d times after the kill", id, got[id])
		}
	}
	res := do(t, "GET", p.url+"/v1/queues/work/stats", nil)
	var st struct{ Backlog, InFlight int }
	json.Unmarshal(res.body, &st)
	if st.Backlog != 0 || st.InFlight != 0 {
		t.Fatalf("stats after: %s", res.body)
	}
}

// TestQueueE2EConsumerProcess is the consumer process of
// TestQueueE2EConsumerKilled; run on its own it does nothing.
func TestQueueE2EConsumerProcess(t *testing.T) {
	base := os.Getenv("DOTDO_E2E_QUEUE_CONSUMER")
	if base == "" {
		return
	}
	msgs := pullQueue(t, base, "work", 10, 3000)
	if len(msgs) != 10 {
		t.Fatalf("consumer pulled %d", len(msgs))
	}
	var leases []string
	for _, m := range msgs[:5] {
		leases = append(leases, m.LeaseID)
	}
	ackQueue(t, base, "work", leases)
	for _, m := range msgs[:5] {
		fmt.Printf("ACKED %s\n", m.ID)
	}
	for _, m := range msgs[5:] {
		fmt.Printf("HELD %s\n", m.ID)
	}
	fmt.Println("MID-BATCH")
	time.Sleep(time.Minute) // killed here
}

// TestQueueE2ERestart: every message whose send was answered survives the
// dotdo process being killed and restarted on its embedded store, delayed
// ones and queue settings included.
func TestQueueE2ERestart(t *testing.T) {
	b := newBackend(t, thingsdb.SQLite)
	p := startAllInOne(t, b)
	if res := do(t, "PUT", p.url+"/v1/queues/keep", `{"max_retries":7}`); res.status != 201 {
		t.Fatalf("create queue: %d %s", res.status, res.body)
	}
	sent := sendQueue(t, p.url, "keep", 0, 500)
	res := do(t, "POST", p.url+"/v1/queues/keep/messages", `{"body":"later","delay_seconds":2}`)
	if res.status != 201 {
		t.Fatalf("send delayed: %d %s", res.status, res.body)
	}
	var d struct{ ID string }
	json.Unmarshal(res.body, &d)
	sent[d.ID] = -1
	// Lease some without acking: they must survive too.
	pullQueue(t, p.url, "keep", 20, 60000)
	p.kill()

	p = startAllInOne(t, b)
	res = do(t, "GET", p.url+"/v1/queues/keep", nil)
	if res.status != 200 || !strings.Contains(string(res.body), `"max_retries":7`) {
		t.Fatalf("queue after restart: %d %s", res.status, res.body)
	}
	got := map[string]bool{}
	deadline := time.Now().Add(90 * time.Second) // the leased ones wait out their lease (the consumer's 30 s AckWait after a crash)
	for len(got) < len(sent) && time.Now().Before(deadline) {
		msgs := pullQueue(t, p.url, "keep", 100, 60000)
		var leases []string
		for _, m := range msgs {
			got[m.ID] = true
			leases = append(leases, m.LeaseID)
		}
		if len(leases) > 0 {
			ackQueue(t, p.url, "keep", leases)
		} else {
			time.Sleep(200 * time.Millisecond)
		}
	}
	for id := range sent {
		if !got[id] {
			t.Errorf("message %s (%d) lost in the restart", id, sent[id])
		}
	}
	if len(got) != len(sent) {
		t.Fatalf("%d messages after the restart, %d sent", len(got), len(sent))
	}
}

// TestQueueE2EPermissions: tenants reach their queues with queue:send and
// queue:consume; system queues stay closed to them; bad input is refused
// through the gateway with the envelope.
func TestQueueE2EPermissions(t *testing.T) {
	queueEngines(t, queuePermissions)
}

func queuePermissions(t *testing.T, extra []string) {
	p := startAllInOne(t, newBackend(t, thingsdb.SQLite), extra...)
	do(t, "PUT", p.url+"/v1/queues/acme", `{}`)
	do(t, "PUT", p.url+"/v1/queues/_internal", `{}`)
	res := do(t, "POST", p.url+"/v1/auth/keys", `{"name":"tenant","grants":{"acme":{"roles":["user"]}}}`)
	if res.status != 201 {
		t.Fatalf("create key: %d %s", res.status, res.body)
	}
	key, _ := res.json(t)["secret"].(string)
	if key == "" {
		t.Fatalf("no key in %s", res.body)
	}
	auth := "Bearer " + key
	for _, c := range []struct {
		method, path, body string
		status             int
	}{
		{"POST", "/v1/queues/acme/messages", `{"body":1}`, 201},
		{"POST", "/v1/queues/acme/messages/pull", `{}`, 200},
		{"PUT", "/v1/queues/acme", `{}`, 403},
		{"GET", "/v1/queues/acme/stats", ``, 403},
		{"POST", "/v1/queues/_internal/messages", `{"body":1}`, 403},
		{"POST", "/v1/queues/other/messages", `{"body":1}`, 403},
		{"POST", "/v1/queues/acme/messages", `{"body":1,"delay_seconds":43201}`, 400},
	} {
		var body any
		if c.body != "" {
			body = c.body
		}
		res := do(t, c.method, p.url+c.path, body, "Authorization", auth)
		if res.status != c.status {
			t.Errorf("%s %s: %d %s, want %d", c.method, c.path, res.status, res.body, c.status)
		}
	}
	if res := do(t, "GET", p.url+"/v1/queues", nil, "Authorization", auth); res.status != 200 || strings.Contains(string(res.body), "_internal") || !strings.Contains(string(res.body), "acme") {
		t.Errorf("tenant's queue list: %d %s", res.status, res.body)
	}
	if res := do(t, "POST", p.url+"/v1/queues/nope/messages", `{"body":1}`); res.status != http.StatusNotFound {
		t.Errorf("unknown queue: %d %s", res.status, res.body)
	}
	if res := do(t, "POST", p.url+"/v1/queues/acme/messages", `{"body":1}`, "Authorization", ""); res.status != http.StatusUnauthorized {
		t.Errorf("no credentials: %d", res.status)
	}
}

// TestQueueE2ESplit: the queue service in its own process with its
// embedded NATS open on a loopback port (--nats-listen), and a gateway
// process reaching the queues through NATS_URL; messages sent through the
// gateway live in the queue process's store and survive its restart.
func TestQueueE2ESplit(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	natsAddr := ln.Addr().String()
	ln.Close()
	qdir := t.TempDir()
	qargs := []string{"--services", "queue", "--data-dir", qdir, "--nats-listen", natsAddr}
	env := []string{"DOTDO_INTERNAL_TOKEN=" + internalToken}
	q := startProc(t, "queue", qargs, env)
	gw := startProc(t, "gateway", []string{"--services", "gateway,auth,db", "--data-dir", t.TempDir()}, append(env, "NATS_URL=nats://"+natsAddr))

	if res := do(t, "PUT", gw.url+"/v1/queues/split", `{}`); res.status != 201 {
		t.Fatalf("create queue through the gateway: %d %s", res.status, res.body)
	}
	sent := sendQueue(t, gw.url, "split", 0, 20)
	// The queue process answers its Connect health with the internal token only.
	if res := do(t, "GET", q.url+"/health", nil); res.status != 200 {
		t.Fatalf("queue process health: %d %s", res.status, res.body)
	}
	gw.stop()
	q.stop()
	q = startProc(t, "queue", qargs, env)
	gw = startProc(t, "gateway", []string{"--services", "gateway,auth,db", "--data-dir", t.TempDir()}, append(env, "NATS_URL=nats://"+natsAddr))
	got := map[string]bool{}
	for range 50 {
		for _, m := range pullQueue(t, gw.url, "split", 100, 60000) {
			got[m.ID] = true
		}
		if len(got) == len(sent) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	for id := range sent {
		if !got[id] {
			t.Errorf("message %s lost", id)
		}
	}
	// A gateway without NATS_URL and without the queue service has no queue routes.
	bare := startProc(t, "bare gateway", []string{"--services", "gateway,auth,db", "--data-dir", t.TempDir()}, env)
	if res := do(t, "GET", bare.url+"/v1/queues", nil); res.status != http.StatusNotFound {
		t.Errorf("queue routes without NATS: %d %s", res.status, res.body)
	}
}
