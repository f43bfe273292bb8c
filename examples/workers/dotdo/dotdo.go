//go:build wasip1

// Package dotdo is the guest side of dotdo's dispatcher for Go workers
// built with GOOS=wasip1 GOARCH=wasm: the CGI request and response, and
// the host functions of module "dotdo" (fetch, and things in the
// worker's own namespace).
package dotdo

import (
	"bufio"
	"encoding/json"
	"io"
	"net/url"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"unsafe"
)

//go:wasmimport dotdo fetch
func hostFetch(ptr unsafe.Pointer, n uint32) uint32

//go:wasmimport dotdo thing_get
func hostThingGet(ptr unsafe.Pointer, n uint32) uint32

//go:wasmimport dotdo thing_put
func hostThingPut(ptr unsafe.Pointer, n uint32) uint32

//go:wasmimport dotdo thing_list
func hostThingList(ptr unsafe.Pointer, n uint32) uint32

//go:wasmimport dotdo thing_delete
func hostThingDelete(ptr unsafe.Pointer, n uint32) uint32

//go:wasmimport dotdo result
func hostResult(ptr unsafe.Pointer, n uint32) uint32

// Error is an error the host returned: a dotdo error code (forbidden,
// not_found, rate_limited, ...) and a message.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

func call(f func(unsafe.Pointer, uint32) uint32, req, out any) error {
	b, err := json.Marshal(req)
	if err != nil {
		return err
	}
	n := f(unsafe.Pointer(unsafe.SliceData(b)), uint32(len(b)))
	runtime.KeepAlive(b)
	buf := make([]byte, n+1)
	m := hostResult(unsafe.Pointer(unsafe.SliceData(buf)), n)
	var env struct {
		OK    json.RawMessage `json:"ok"`
		Error *Error          `json:"error"`
	}
	if err := json.Unmarshal(buf[:m], &env); err != nil {
		return err
	}
	if env.Error != nil {
		return env.Error
	}
	if out != nil {
		return json.Unmarshal(env.OK, out)
	}
	return nil
}

// FetchRequest is an outbound HTTP request.
type FetchRequest struct {
	Method  string            `json:"method,omitempty"`
	URL     string            `json:"url"`
	Headers map[string]string `json:"headers,omitempty"`
	Body    []byte            `json:"body,omitempty"`
}

// FetchResponse is its response.
type FetchResponse struct {
	Status  int               `json:"status"`
	Headers map[string]string `json:"headers"`
	Body    []byte            `json:"body"`
}

// Fetch makes an HTTP request through the host, as the namespace's
// outbound policy allows; it counts against the subrequest limit.
func Fetch(req FetchRequest) (*FetchResponse, error) {
	var res FetchResponse
	if err := call(hostFetch, req, &res); err != nil {
		return nil, err
	}
	return &res, nil
}

// Thing is a thing in the worker's namespace.
type Thing struct {
	ID        string          `json:"id"`
	Type      string          `json:"type"`
	Data      json.RawMessage `json:"data"`
	Version   int64           `json:"version"`
	CreatedAt int64           `json:"createdAt"`
	UpdatedAt int64           `json:"updatedAt"`
}

// Get reads a thing; a missing one is an *Error with code not_found.
func Get(id string) (*Thing, error) {
	var t Thing
	if err := call(hostThingGet, map[string]string{"id": id}, &t); err != nil {
		return nil, err
	}
	return &t, nil
}

// Put writes a thing (an upsert).
func Put(id, typ string, data any) (*Thing, error) {
	d, err := json.Marshal(data)
	if err != nil {
		return nil, err
	}
	var t Thing
	if err := call(hostThingPut, map[string]any{"id": id, "type": typ, "data": json.RawMessage(d)}, &t); err != nil {
		return nil, err
	}
	return &t, nil
}

// List lists things of a type, newest first.
func List(typ string, limit int) ([]Thing, error) {
	var out struct {
		Items []Thing `json:"items"`
	}
	if err := call(hostThingList, map[string]any{"type": typ, "limit": limit, "order": "-createdAt"}, &out); err != nil {
		return nil, err
	}
	return out.Items, nil
}

// Delete deletes a thing.
func Delete(id string) error { return call(hostThingDelete, map[string]string{"id": id}, nil) }

// Request is the CGI request the dispatcher passes in.
type Request struct {
	Method  string
	Path    string
	Query   url.Values
	Headers map[string]string // canonical names, from HTTP_* variables
	Body    []byte
}

// ReadRequest reads the request from the environment and stdin.
func ReadRequest() *Request {
	q, _ := url.ParseQuery(os.Getenv("QUERY_STRING"))
	r := &Request{Method: os.Getenv("REQUEST_METHOD"), Path: os.Getenv("PATH_INFO"), Query: q, Headers: map[string]string{}}
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		if name, ok := strings.CutPrefix(k, "HTTP_"); ok {
			r.Headers[canonical(name)] = v
		}
	}
	if ct := os.Getenv("CONTENT_TYPE"); ct != "" {
		r.Headers["Content-Type"] = ct
	}
	if n, _ := strconv.Atoi(os.Getenv("CONTENT_LENGTH")); n > 0 {
		r.Body, _ = io.ReadAll(io.LimitReader(os.Stdin, int64(n)))
	}
	return r
}

// canonical turns USER_AGENT into User-Agent.
func canonical(s string) string {
	parts := strings.Split(strings.ToLower(s), "_")
	for i, p := range parts {
		if p != "" {
			parts[i] = strings.ToUpper(p[:1]) + p[1:]
		}
	}
	return strings.Join(parts, "-")
}

// Respond writes a CGI response: the status, the headers (sorted), an
// empty line and the body.
func Respond(status int, headers map[string]string, body []byte) {
	w := bufio.NewWriter(os.Stdout)
	w.WriteString("Status: " + strconv.Itoa(status) + "\n")
	keys := make([]string, 0, len(headers))
	for k := range headers {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		w.WriteString(k + ": " + headers[k] + "\n")
	}
	w.WriteString("\n")
	w.Write(body)
	w.Flush()
}

// JSON responds with v as JSON.
func JSON(status int, v any) {
	b, _ := json.Marshal(v)
	Respond(status, map[string]string{"Content-Type": "application/json"}, append(b, '\n'))
}
