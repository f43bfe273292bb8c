//go:build wasip1

// Command notes shows the host functions: it keeps notes as things in its
// namespace and fetches URLs through the namespace's outbound policy.
//
//	PUT    /notes/{id}        body is the note's text
//	GET    /notes/{id}        the note, or 404
//	DELETE /notes/{id}
//	GET    /notes             the latest notes
//	GET    /fetch?url=U       fetches U: {"status","body"}; a refused fetch is 502 with the host's error
//	GET    /fetch?url=U&n=N   fetches U N times: {"ok":k,"errors":[codes]}
package main

import (
	"errors"
	"strconv"
	"strings"

	"github.com/dotdo/dotdo/examples/workers/dotdo"
)

func main() {
	r := dotdo.ReadRequest()
	switch {
	case r.Path == "/fetch":
		fetch(r)
	case r.Path == "/notes" && r.Method == "GET":
		notes, err := dotdo.List("Note", 20)
		if err != nil {
			fail(err)
			return
		}
		dotdo.JSON(200, map[string]any{"items": notes})
	case strings.HasPrefix(r.Path, "/notes/"):
		note(r, strings.TrimPrefix(r.Path, "/notes/"))
	default:
		dotdo.JSON(404, map[string]string{"error": "no route for " + r.Method + " " + r.Path})
	}
}

func note(r *dotdo.Request, id string) {
	switch r.Method {
	case "PUT":
		t, err := dotdo.Put(id, "Note", map[string]string{"text": string(r.Body)})
		if err != nil {
			fail(err)
			return
		}
		dotdo.JSON(200, t)
	case "GET":
		t, err := dotdo.Get(id)
		if err != nil {
			fail(err)
			return
		}
		dotdo.JSON(200, t)
	case "DELETE":
		if err := dotdo.Delete(id); err != nil {
			fail(err)
			return
		}
		dotdo.Respond(204, map[string]string{"Content-Type": "text/plain"}, nil)
	default:
		dotdo.JSON(405, map[string]string{"error": "use GET, PUT or DELETE"})
	}
}

func fetch(r *dotdo.Request) {
	u := r.Query.Get("url")
	n, _ := strconv.Atoi(r.Query.Get("n"))
	if n <= 0 {
		res, err := dotdo.Fetch(dotdo.FetchRequest{URL: u})
		if err != nil {
			fail(err)
			return
		}
		dotdo.JSON(200, map[string]any{"status": res.Status, "body": string(res.Body)})
		return
	}
	ok, codes := 0, []string{}
	for i := 0; i < n; i++ {
		if _, err := dotdo.Fetch(dotdo.FetchRequest{URL: u}); err != nil {
			var e *dotdo.Error
			if errors.As(err, &e) {
				codes = append(codes, e.Code)
			} else {
				codes = append(codes, err.Error())
			}
			continue
		}
		ok++
	}
	dotdo.JSON(200, map[string]any{"ok": ok, "errors": codes})
}

// fail answers with the host's error: 404 for not_found, 502 otherwise.
func fail(err error) {
	status := 502
	var e *dotdo.Error
	if errors.As(err, &e) && e.Code == "not_found" {
		status = 404
	}
	dotdo.JSON(status, map[string]any{"error": err})
}
