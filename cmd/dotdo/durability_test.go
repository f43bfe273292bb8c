//go:build unix

package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dotdo/dotdo/internal/testdb"
)

const (
	durableIDs     = 1000
	durableWorkers = 64
	// killAfter is how many writes are acknowledged before the process is
	// killed: about three per id, so that the kill lands mid-load.
	killAfter = 3000
)

// idState is what the client knows about one id's writes.
type idState struct {
	acked    int64 // the last acknowledged version; 0 if none
	ackedSeq int   // the seq in the data of that version
	// pending is set when a write got no answer: it may or may not have
	// committed.
	pending    bool
	pendingSeq int
}

// TestKill9KeepsAcknowledgedWrites kills the process with SIGKILL under a
// concurrent write load and checks, after a restart on the same data, that
// every acknowledged write is there.
func TestKill9KeepsAcknowledgedWrites(t *testing.T) {
	t.Parallel()
	for _, be := range testdb.Backends() {
		t.Run(be, func(t *testing.T) {
			t.Parallel()
			b := newBackend(t, be)
			p := startAllInOne(t, b)
			ns := "durable"
			states := make([]idState, durableIDs)
			var (
				acks   atomic.Int64
				killed atomic.Bool
				wg     sync.WaitGroup
			)
			reached := make(chan struct{})
			var reachedOnce sync.Once
			for w := range durableWorkers {
				wg.Go(func() {
					// Worker w owns ids w, w+64, w+128, ... and writes
					// them round-robin, each conditionally on the
					// version it last saw acknowledged.
					var own []int
					for i := w; i < durableIDs; i += durableWorkers {
						own = append(own, i)
					}
					for round := 1; ; round++ {
						for _, i := range own {
							st := &states[i]
							seq := round
							hdr := []string{"If-None-Match", "*"}
							if st.acked > 0 {
								hdr = []string{"If-Match", strconv.Quote(strconv.FormatInt(st.acked, 10))}
							}
							status, version, err := putSeq(p.url, ns, i, w, seq, hdr)
							if err != nil {
								if !killed.Load() {
									t.Errorf("PUT id %d before the kill: %v", i, err)
								}
								st.pending, st.pendingSeq = true, seq
								return
							}
							if want := st.acked + 1; (status != 200 && status != 201) || version != want {
								t.Errorf("PUT id %d (seq %d) = %d, version %d; want 200 or 201 and version %d", i, seq, status, version, want)
								return
							}
							st.acked, st.ackedSeq = version, seq
							if acks.Add(1) == killAfter {
								reachedOnce.Do(func() { close(reached) })
							}
						}
					}
				})
			}
			select {
			case <-reached:
			case <-time.After(120 * time.Second):
				t.Errorf("only %d writes acknowledged; want %d before the kill", acks.Load(), killAfter)
			}
			killed.Store(true)
			p.kill()
			wg.Wait()
			if t.Failed() {
				return
			}

			p = startAllInOne(t, b)
			var (
				mu       sync.Mutex
				problems []string
				checks   sync.WaitGroup
				next     atomic.Int64
				bumped   atomic.Int64
			)
			for range 16 {
				checks.Go(func() {
					for {
						i := int(next.Add(1) - 1)
						if i >= durableIDs {
							return
						}
						if msg := checkDurable(p.url, ns, i, states[i], &bumped); msg != "" {
							mu.Lock()
							problems = append(problems, msg)
							mu.Unlock()
						}
					}
				})
			}
			checks.Wait()
			for i, msg := range problems {
				if i == 20 {
					t.Errorf("... and %d more", len(problems)-20)
					break
				}
				t.Error(msg)
			}
			t.Logf("%d writes acknowledged before SIGKILL; %d writes in flight then were found committed", acks.Load(), bumped.Load())

			// The restarted process takes writes where the old one stopped.
			r := do(t, "GET", p.url+"/v1/things/durable/"+durableID(0), nil)
			if r.status == 200 {
				tag := r.header.Get("ETag")
				r = do(t, "PUT", p.url+"/v1/things/durable/"+durableID(0), `{"type":"counter","data":{"after":"restart"}}`, "If-Match", tag)
				if r.status != 200 {
					t.Errorf("PUT with If-Match %s after the restart = %d; want 200\n%s", tag, r.status, r.body)
				}
			}
		})
	}
}

func durableID(i int) string { return fmt.Sprintf("k%04d", i) }

// putSeq writes id i with data {"worker":w,"seq":seq} and returns the
// status and the version of the answer.
func putSeq(base, ns string, i, w, seq int, header []string) (int, int64, error) {
	body := fmt.Sprintf(`{"type":"counter","data":{"worker":%d,"seq":%d}}`, w, seq)
	req, err := http.NewRequest("PUT", base+"/v1/things/"+ns+"/"+durableID(i), strings.NewReader(body))
	if err != nil {
		return 0, 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+adminKey)
	req.Header.Set(header[0], header[1])
	res, err := httpClient.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer res.Body.Close()
	var thing struct{ Version int64 }
	if err := json.NewDecoder(res.Body).Decode(&thing); err != nil {
		return 0, 0, fmt.Errorf("read answer: %w", err)
	}
	return res.StatusCode, thing.Version, nil
}

// checkDurable reads id i after the restart and says what is wrong, or "".
// A write in flight at the kill may have committed without its answer: then
// the version is one more than acknowledged and holds that write's data.
func checkDurable(base, ns string, i int, st idState, bumped *atomic.Int64) string {
	req, _ := http.NewRequest("GET", base+"/v1/things/"+ns+"/"+durableID(i), nil)
	req.Header.Set("Authorization", "Bearer "+adminKey)
	res, err := httpClient.Do(req)
	if err != nil {
		return fmt.Sprintf("GET %s: %v", durableID(i), err)
	}
	defer res.Body.Close()
	var thing struct {
		Version int64
		Data    struct{ Seq int }
	}
	if res.StatusCode == 404 {
		if st.acked == 0 {
			return ""
		}
		return fmt.Sprintf("GET %s = 404; want version %d, acknowledged before the kill", durableID(i), st.acked)
	}
	if res.StatusCode != 200 {
		return fmt.Sprintf("GET %s = %d; want 200", durableID(i), res.StatusCode)
	}
	if err := json.NewDecoder(res.Body).Decode(&thing); err != nil {
		return fmt.Sprintf("GET %s: %v", durableID(i), err)
	}
	switch {
	case thing.Version == st.acked && thing.Data.Seq == st.ackedSeq:
		return ""
	case st.pending && thing.Version == st.acked+1 && thing.Data.Seq == st.pendingSeq:
		bumped.Add(1)
		return ""
	}
	want := fmt.Sprintf("version %d with seq %d", st.acked, st.ackedSeq)
	if st.pending {
		want += fmt.Sprintf(", or version %d with seq %d", st.acked+1, st.pendingSeq)
	}
	return fmt.Sprintf("GET %s = version %d with seq %d; want %s", durableID(i), thing.Version, thing.Data.Seq, want)
}

// TestSIGTERMDrainsInFlightRequests holds requests open in the middle of
// their bodies, sends SIGTERM, and checks that the process stops taking
// connections yet finishes those requests, commits them, and exits 0.
func TestSIGTERMDrainsInFlightRequests(t *testing.T) {
	t.Parallel()
	for _, be := range testdb.Backends() {
		t.Run(be, func(t *testing.T) {
			t.Parallel()
			b := newBackend(t, be)
			p := startAllInOne(t, b)
			addr := strings.TrimPrefix(p.url, "http://")

			// Each request announces its body and waits for 100 Continue,
			// which the server sends when the handler starts reading it:
			// the request is then in flight.
			const n = 3
			body := `{"type":"doc","data":{"drained":true}}`
			conns := make([]net.Conn, n)
			readers := make([]*bufio.Reader, n)
			for i := range n {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatalf("dial: %v", err)
				}
				defer c.Close()
				fmt.Fprintf(c, "PUT /v1/things/drain/slow%d HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n", i, addr, adminKey, len(body))
				br := bufio.NewReader(c)
				line, err := br.ReadString('\n')
				if err != nil || !strings.HasPrefix(line, "HTTP/1.1 100") {
					t.Fatalf("request %d: got %q, %v; want HTTP/1.1 100 Continue", i, line, err)
				}
				for line != "\r\n" { // the rest of the interim response
					if line, err = br.ReadString('\n'); err != nil {
						t.Fatalf("request %d: reading 100 Continue: %v", i, err)
					}
				}
				// Half the body: the handler now waits for the rest.
				if _, err := c.Write([]byte(body[:len(body)/2])); err != nil {
					t.Fatalf("request %d: write: %v", i, err)
				}
				conns[i], readers[i] = c, br
			}

			p.signal(syscall.SIGTERM)
			p.waitLog("that it is draining", func(rec map[string]any) bool {
				return strings.HasPrefix(fmt.Sprint(rec["msg"]), "shutting down")
			})
			// New connections are refused while the old requests drain.
			deadline := time.Now().Add(10 * time.Second)
			for {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					break
				}
				c.Close()
				if time.Now().After(deadline) {
					t.Fatalf("the listener still accepts connections after SIGTERM")
				}
				time.Sleep(10 * time.Millisecond)
			}
			select {
			case <-p.exited:
				t.Fatalf("the process exited with requests in flight; output:\n%s", p.logs.tail(20))
			default:
			}

			for i := range n {
				if _, err := conns[i].Write([]byte(body[len(body)/2:])); err != nil {
					t.Fatalf("request %d: write the rest: %v", i, err)
				}
				res, err := http.ReadResponse(readers[i], nil)
				if err != nil {
					t.Fatalf("request %d: read response: %v", i, err)
				}
				res.Body.Close()
				if res.StatusCode != 201 {
					t.Errorf("in-flight PUT %d during shutdown = %d; want 201", i, res.StatusCode)
				}
			}
			if st := p.wait(); st.ExitCode() != 0 {
				t.Fatalf("exit after SIGTERM: %v; want status 0. Output:\n%s", st, p.logs.tail(20))
			}
			p.waitLog("that it stopped", func(rec map[string]any) bool { return rec["msg"] == "stopped" })

			// The drained writes were committed.
			p = startAllInOne(t, b)
			for i := range n {
				r := do(t, "GET", fmt.Sprintf("%s/v1/things/drain/slow%d", p.url, i), nil)
				if r.status != 200 || r.header.Get("ETag") != `"1"` {
					t.Errorf("GET slow%d after restart = %d, ETag %q; want 200 and \"1\"", i, r.status, r.header.Get("ETag"))
				}
			}
		})
	}
}
