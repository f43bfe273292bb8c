package apierr

import (
	"bytes"
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
)

// body has a field of each kind a request body decodes into.
type body struct {
	Name   string            `json:"name"`
	Count  int32             `json:"count"`
	Size   uint8             `json:"size"`
	Ratio  float32           `json:"ratio"`
	On     *bool             `json:"on"`
	Tags   []string          `json:"tags"`
	Labels map[string]string `json:"labels"`
	Raw    []byte            `json:"raw"`
	Items  []struct {
		ID string `json:"id"`
	} `json:"items"`
	Data json.RawMessage `json:"data"`
}

func TestDecodeJSONErrors(t *testing.T) {
	for _, tc := range []struct {
		name, body, want string
	}{
		{"empty", ``, "request body is empty; send a JSON object"},
		{"whitespace", " \r\n\t ", "request body is empty; send a JSON object"},
		{"unknown field", `{"colour":"red"}`, `invalid JSON body: unknown field "colour"`},
		{"unknown nested field", `{"items":[{"id":"a","x":1}]}`, `invalid JSON body: unknown field "x"`},
		{"string for a number", `{"count":"3"}`, "invalid JSON body: field count must be an integer, not string"},
		{"fraction for an integer", `{"count":1.5}`, "invalid JSON body: field count must be an integer from -2147483648 to 2147483647, not number 1.5"},
		{"integer out of range", `{"count":3000000000}`, "invalid JSON body: field count must be an integer from -2147483648 to 2147483647, not number 3000000000"},
		{"negative for unsigned", `{"size":-1}`, "invalid JSON body: field size must be an integer from 0 to 255, not number -1"},
		{"float out of range", `{"ratio":1e39}`, "invalid JSON body: field ratio must be a number from -3.4e+38 to 3.4e+38, not number 1e39"},
		{"number for a bool", `{"on":1}`, "invalid JSON body: field on must be true or false, not number"},
		{"number for a string", `{"name":5}`, "invalid JSON body: field name must be a string, not number"},
		{"object for an array", `{"tags":{}}`, "invalid JSON body: field tags must be an array, not object"},
		{"array for an object", `{"labels":[]}`, "invalid JSON body: field labels must be an object, not array"},
		{"number for bytes", `{"raw":1}`, "invalid JSON body: field raw must be a base64 string, not number"},
		{"bad base64", `{"raw":"!!"}`, "invalid JSON body: illegal base64 data at input byte 0"},
		{"nested field", `{"items":[{"id":7}]}`, "invalid JSON body: field items.id must be a string, not number"},
		{"array for the body", `[1]`, "invalid JSON body: the body must be an object, not array"},
		{"string for the body", `"x"`, "invalid JSON body: the body must be an object, not string"},
		{"null for the body", ` null `, "invalid JSON body: the body must be an object, not null"},
		{"syntax", `{"name" "x"}`, "invalid JSON body: invalid character '\"' after object key at byte 9"},
		{"not JSON", `name=x`, "invalid JSON body: invalid character 'a' in literal null (expecting 'u') at byte 2"},
		{"truncated", `{"name":`, "invalid JSON body: unexpected end of JSON input"},
		{"two objects", `{} {}`, "invalid JSON body: trailing data after the JSON value"},
		{"closing brace", `{"name":"x"}}`, "invalid JSON body: trailing data after the JSON value"},
		{"trailing text", `{"name":"x"} x`, "invalid JSON body: trailing data after the JSON value"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var v body
			err := DecodeJSON([]byte(tc.body), &v)
			if !Is(err, Invalid) || From(err).Message != tc.want {
				t.Errorf("DecodeJSON(%q) = %v; want invalid: %s", tc.body, err, tc.want)
			}
		})
	}
}

func TestDecodeJSON(t *testing.T) {
	var v body
	in := `{"name":"a","count":-3,"size":255,"ratio":0.5,"on":true,"tags":["x"],"labels":{"k":"v"},"raw":"aGk=","items":[{"id":"i"}],"data":{"any":[1]}}` + "\n"
	if err := DecodeJSON([]byte(in), &v); err != nil {
		t.Fatalf("DecodeJSON(%q) = %v; want nil", in, err)
	}
	if v.Name != "a" || v.Count != -3 || v.Size != 255 || !*v.On || string(v.Raw) != "hi" || v.Items[0].ID != "i" || string(v.Data) != `{"any":[1]}` {
		t.Errorf("DecodeJSON(%q) decoded %+v", in, v)
	}
	// A body that is not an object decodes into a value that is not a
	// struct.
	var list []int
	if err := DecodeJSON([]byte(" [1,2] "), &list); err != nil || len(list) != 2 {
		t.Errorf("DecodeJSON([1,2]) = %v, %v; want [1 2]", list, err)
	}
}

// A non-pointer destination is the caller's bug: an internal error, not
// the client's 400.
func TestDecodeJSONNotPointer(t *testing.T) {
	if err := DecodeJSON([]byte(`{}`), body{}); err == nil || From(err).Code != Internal {
		t.Errorf("DecodeJSON into a non-pointer = %v; want an internal error", err)
	}
}

func TestDecodeBody(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		limit      int64
		code       Code
	}{
		{"ok", `{"name":"a"}`, 100, ""},
		{"too large", `{"name":"` + strings.Repeat("a", 100) + `"}`, 50, TooLarge},
		{"invalid", `{"name":`, 100, Invalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "/", strings.NewReader(tc.body))
			w := httptest.NewRecorder()
			r.Body = http.MaxBytesReader(w, r.Body, tc.limit)
			var v body
			err := DecodeBody(r, &v)
			if tc.code == "" && err != nil || tc.code != "" && !Is(err, tc.code) {
				t.Errorf("DecodeBody(%q) = %v; want code %q", tc.body, err, tc.code)
			}
		})
	}
}

func TestWriteJSON(t *testing.T) {
	w := httptest.NewRecorder()
	WriteJSON(w, http.StatusCreated, map[string]any{"id": "x"})
	if w.Code != http.StatusCreated || w.Body.String() != "{\"id\":\"x\"}\n" {
		t.Errorf("WriteJSON = %d %q; want 201 {\"id\":\"x\"} and a newline", w.Code, w.Body)
	}
	if ct, cl := w.Header().Get("Content-Type"), w.Header().Get("Content-Length"); ct != "application/json" || cl != "11" {
		t.Errorf("WriteJSON headers = %q, %q; want application/json, 11", ct, cl)
	}

	w = httptest.NewRecorder()
	WriteJSON(w, http.StatusOK, math.NaN())
	if w.Code != http.StatusInternalServerError || !strings.Contains(w.Body.String(), `"code":"internal"`) {
		t.Errorf("WriteJSON(NaN) = %d %s; want 500 internal", w.Code, w.Body)
	}
}

// FuzzDecodeJSON checks that any body either decodes to what
// encoding/json reads from it or fails with a 400 that speaks JSON, not
// Go.
func FuzzDecodeJSON(f *testing.F) {
	for _, seed := range []string{
		``, ` `, `{}`, `null`, `[]`, `"x"`, `1`, `{"name":"a","count":1}`, `{"count":1.5}`, `{"count":1e99}`,
		`{"size":-1}`, `{"ratio":1e39}`, `{"on":"yes"}`, `{"tags":["a",1]}`, `{"labels":{"a":1}}`, `{"raw":"aGk="}`,
		`{"raw":"?"}`, `{"items":[{"id":"a"},{"id":{}}]}`, `{"items":[{"x":1}]}`, `{"data":{"deep":[[[]]]}}`,
		`{"name":"a"} {"name":"b"}`, `{"name":"a"}]`, `{"name":`, `{"name":"\ud800"}`, `{"Name":"case"}`, "\xef\xbb\xbf{}",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var got body
		err := DecodeJSON(b, &got)
		if err != nil {
			e := From(err)
			if e.Code != Invalid {
				t.Fatalf("DecodeJSON(%q) = %v; want an invalid error", b, err)
			}
			for _, goTerm := range []string{"Go ", "json: ", "apierr.", "int32", "uint8", "float32", "[]uint8", "struct", "interface", "map["} {
				if strings.Contains(e.Message, goTerm) && !bytes.Contains(b, []byte(goTerm)) {
					t.Fatalf("DecodeJSON(%q) = %q; names Go's %q", b, e.Message, goTerm)
				}
			}
			return
		}
		// What DecodeJSON accepts is one valid JSON value that
		// encoding/json reads the same way.
		if !json.Valid(b) {
			t.Fatalf("DecodeJSON(%q) accepted invalid JSON", b)
		}
		var want body
		if err := json.Unmarshal(b, &want); err != nil {
			t.Fatalf("DecodeJSON(%q) accepted what json.Unmarshal refuses: %v", b, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("DecodeJSON(%q) = %+v; json.Unmarshal reads %+v", b, got, want)
		}
	})
}
