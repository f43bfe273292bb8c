//go:build unix

package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dotdo/dotdo/internal/testdb"
	"github.com/dotdo/dotdo/internal/thingsdb"
)

// BenchmarkEmailOutboxE2E drives the built binary (all-in-one, SQLite,
// outbox provider) over HTTP: b.N emails rendered from the welcome
// template, posted by 32 concurrent clients to POST /v1/emails, and timed
// until the last one is recorded as sent.
//
//	go test ./cmd/dotdo -run '^$' -bench EmailOutboxE2E -benchtime 10000x
//
// With DOTDO_TEST_POSTGRES_URL it runs on PostgreSQL too.
func BenchmarkEmailOutboxE2E(b *testing.B) {
	for _, name := range testdb.Backends() {
		b.Run(name, func(b *testing.B) {
			be := backend{name: name, dataDir: b.TempDir()}
			if name == thingsdb.Postgres {
				be.databaseURL = testdb.SchemaURL(b)
			}
			benchEmails(b, benchLaunch(b, append(be.args(), "--rate-limit", "off"), be.env()))
		})
	}
}

func benchEmails(b *testing.B, base string) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	var next, failed atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for range 32 {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				body := fmt.Sprintf(`{"from":"Acme <noreply@acme.test>","to":"user%d@x.test","template":"welcome","data":{"name":"Ann","appName":"Acme","loginUrl":"https://acme.test/login"},"tags":[{"name":"bench","value":"yes"}]}`, i)
				req, _ := http.NewRequest("POST", base+"/v1/emails", bytes.NewReader([]byte(body)))
				req.Header.Set("Authorization", "Bearer "+adminKey)
				req.Header.Set("Content-Type", "application/json")
				res, err := client.Do(req)
				if err != nil {
					failed.Add(1)
					continue
				}
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if res.StatusCode != http.StatusAccepted {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	accepted := time.Since(start)
	// Done when no email is left queued or sending.
	for {
		busy := false
		for _, st := range []string{"queued", "sending"} {
			req, _ := http.NewRequest("GET", base+"/v1/emails?limit=1&status="+st, nil)
			req.Header.Set("Authorization", "Bearer "+adminKey)
			res, err := client.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if !bytes.Contains(body, []byte(`"items":[]`)) {
				busy = true
			}
		}
		if !busy {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	total := time.Since(start)
	b.StopTimer()
	if failed.Load() > 0 {
		b.Fatalf("%d requests failed", failed.Load())
	}
	b.ReportMetric(float64(b.N)/accepted.Seconds(), "accepted/s")
	b.ReportMetric(float64(b.N)/total.Seconds(), "sent/s")
}

// benchLaunch starts the binary for a benchmark and returns its URL; it
// is stopped with SIGTERM when the benchmark ends.
func benchLaunch(b *testing.B, args, env []string) string {
	b.Helper()
	cmd := exec.Command(dotdoBin, append([]string{"serve", "--addr", "127.0.0.1:0", "--log-format", "json"}, args...)...)
	cmd.Env = append(baseEnv(), env...)
	out, err := cmd.StderrPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	})
	urls := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		sent := false
		for sc.Scan() {
			var rec map[string]any
			if !sent && json.Unmarshal(sc.Bytes(), &rec) == nil && rec["msg"] == "dotdo listening" {
				urls <- rec["url"].(string)
				sent = true
			}
		}
	}()
	select {
	case u := <-urls:
		for deadline := time.Now().Add(startTimeout); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if res, err := http.Get(u + "/health"); err == nil {
				res.Body.Close()
				if res.StatusCode == http.StatusOK {
					return u
				}
			}
		}
		b.Fatalf("%s never became healthy", u)
	case <-time.After(startTimeout):
		b.Fatal("the binary did not start listening")
	}
	return ""
}
