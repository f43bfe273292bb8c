// Command webhookload measures dotdo's inbound webhooks: it sends verified
// Stripe deliveries, each a distinct event signed with the configured
// secret (all signed before the clock starts), from -c connections, and
// prints the rate of 2xx answers and the latency percentiles. With -dump
// it writes the signed deliveries to a file for wrk instead
// (scripts/bench/webhooks.lua), a lighter client on a shared machine.
//
//	go run ./scripts/webhookload -url http://127.0.0.1:8787 -secret whsec_... -n 30000 -c 32
//	go run ./scripts/webhookload -secret whsec_... -n 200000 -dump /tmp/deliveries.tsv
package main

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

type delivery struct {
	body []byte
	sig  string
}

func main() {
	url := flag.String("url", "http://127.0.0.1:8787", "dotdo's address")
	secret := flag.String("secret", "", "the Stripe signing secret dotdo verifies with (required)")
	n := flag.Int("n", 20000, "deliveries to send")
	c := flag.Int("c", 32, "concurrent connections")
	typ := flag.String("type", "payment_intent.succeeded", "event type")
	dump := flag.String("dump", "", "write the signed deliveries to this file (one \"signature<TAB>body\" per line, for scripts/bench/webhooks.lua) instead of sending them")
	flag.Parse()
	if *secret == "" {
		log.Fatal("webhookload: -secret is required")
	}
	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	ds := make([]delivery, *n)
	now := time.Now().Unix()
	for i := range ds {
		body := fmt.Appendf(nil, `{"id":"evt_%s_%d","object":"event","type":%q,"created":%d,"data":{"object":{"id":"pi_%s_%d","object":"payment_intent","customer":"cus_load","amount":%d,"currency":"usd","status":"succeeded"}}}`,
			run, i, *typ, now, run, i, 100+i%900)
		m := hmac.New(sha256.New, []byte(*secret))
		fmt.Fprintf(m, "%d.", now)
		m.Write(body)
		ds[i] = delivery{body: body, sig: fmt.Sprintf("t=%d,v1=%s", now, hex.EncodeToString(m.Sum(nil)))}
	}
	if *dump != "" {
		var buf bytes.Buffer
		for _, d := range ds {
			buf.WriteString(d.sig)
			buf.WriteByte('\t')
			buf.Write(d.body)
			buf.WriteByte('\n')
		}
		if err := os.WriteFile(*dump, buf.Bytes(), 0o644); err != nil {
			log.Fatal(err)
		}
		return
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: *c, MaxIdleConns: *c}, Timeout: 30 * time.Second}
	lat := make([]time.Duration, *n)
	var next atomic.Int64
	var mu sync.Mutex
	codes := map[int]int{}
	var wg sync.WaitGroup
	start := time.Now()
	for range *c {
		wg.Go(func() {
			local := map[int]int{}
			for {
				i := int(next.Add(1) - 1)
				if i >= *n {
					break
				}
				t0 := time.Now()
				req, _ := http.NewRequest("POST", *url+"/webhooks/stripe", bytes.NewReader(ds[i].body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Stripe-Signature", ds[i].sig)
				res, err := client.Do(req)
				code := 0
				if err == nil {
					io.Copy(io.Discard, res.Body)
					res.Body.Close()
					code = res.StatusCode
				}
				lat[i] = time.Since(t0)
				local[code]++
			}
			mu.Lock()
			for k, v := range local {
				codes[k] += v
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	el := time.Since(start)
	slices.Sort(lat)
	pct := func(p float64) string {
		return fmt.Sprintf("%.2f ms", float64(lat[int(p*float64(len(lat)-1))].Microseconds())/1000)
	}
	ok := 0
	for k, v := range codes {
		if k >= 200 && k < 300 {
			ok += v
		}
	}
	fmt.Printf("%d deliveries in %.2fs from %d connections: %.0f accepted/s; statuses %v\n", *n, el.Seconds(), *c, float64(ok)/el.Seconds(), codes)
	fmt.Printf("latency p50 %s  p90 %s  p99 %s  max %s\n", pct(0.50), pct(0.90), pct(0.99), pct(1))
	if ok != *n {
		os.Exit(1)
	}
}
