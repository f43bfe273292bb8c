//go:build wasip1

// Command echo answers with what it was sent, as JSON: the method, the
// path, the query, the headers and the body. ?status=N sets the status,
// and it always sends an X-Echo header. For the dispatcher's limit tests,
// ?loop=1 spins forever and ?alloc=N allocates N MiB first; ?log=text
// writes text to stderr, which the dispatcher logs with the request ID.
package main

import (
	"os"
	"strconv"

	"github.com/dotdo/dotdo/examples/workers/dotdo"
)

func main() {
	r := dotdo.ReadRequest()
	if msg := r.Query.Get("log"); msg != "" {
		os.Stderr.WriteString(msg + "\n")
	}
	if r.Query.Get("loop") == "1" {
		spin()
	}
	if n, err := strconv.Atoi(r.Query.Get("alloc")); err == nil && n > 0 {
		hold = make([][]byte, n)
		for i := range hold {
			hold[i] = make([]byte, 1<<20)
			hold[i][0] = 1
		}
	}
	status := 200
	if s, err := strconv.Atoi(r.Query.Get("status")); err == nil && s >= 200 && s <= 599 {
		status = s
	}
	dotdo.Respond(status, map[string]string{"Content-Type": "application/json", "X-Echo": "yes"}, jsonOf(r))
}

// hold keeps ?alloc's memory reachable.
var hold [][]byte

var counter int

func spin() {
	for {
		counter++
	}
}

func jsonOf(r *dotdo.Request) []byte {
	return marshal(map[string]any{
		"method":  r.Method,
		"path":    r.Path,
		"query":   r.Query,
		"headers": r.Headers,
		"body":    string(r.Body),
	})
}
