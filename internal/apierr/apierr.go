// Package apierr is dotdo's one error type. Services return *Error values
// with a stable code; the edges map them once to an HTTP status and the JSON
// envelope, or to a Connect code that carries the same dotdo code so that a
// remote binding returns the same error as a local one.
package apierr

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"connectrpc.com/connect"
)

// Code is a stable, documented error code.
type Code string

// The codes of the error envelope, with their HTTP status in Status.
const (
	Invalid            Code = "invalid"             // 400
	Unauthenticated    Code = "unauthenticated"     // 401
	Forbidden          Code = "forbidden"           // 403
	NotFound           Code = "not_found"           // 404
	MethodNotAllowed   Code = "method_not_allowed"  // 405
	Conflict           Code = "conflict"            // 409
	PreconditionFailed Code = "precondition_failed" // 412
	TooLarge           Code = "too_large"           // 413
	Unsupported        Code = "unsupported_media"   // 415
	Unprocessable      Code = "unprocessable"       // 422
	RateLimited        Code = "rate_limited"        // 429
	Internal           Code = "internal"            // 500
	Unavailable        Code = "unavailable"         // 503
	Timeout            Code = "timeout"             // 504
	NotImplemented     Code = "not_implemented"     // 501
)

var statuses = map[Code]int{
	Invalid:            http.StatusBadRequest,
	Unauthenticated:    http.StatusUnauthorized,
	Forbidden:          http.StatusForbidden,
	NotFound:           http.StatusNotFound,
	MethodNotAllowed:   http.StatusMethodNotAllowed,
	Conflict:           http.StatusConflict,
	PreconditionFailed: http.StatusPreconditionFailed,
	TooLarge:           http.StatusRequestEntityTooLarge,
	Unsupported:        http.StatusUnsupportedMediaType,
	Unprocessable:      http.StatusUnprocessableEntity,
	RateLimited:        http.StatusTooManyRequests,
	Internal:           http.StatusInternalServerError,
	Unavailable:        http.StatusServiceUnavailable,
	Timeout:            http.StatusGatewayTimeout,
	NotImplemented:     http.StatusNotImplemented,
}

var connectCodes = map[Code]connect.Code{
	Invalid:            connect.CodeInvalidArgument,
	Unauthenticated:    connect.CodeUnauthenticated,
	Forbidden:          connect.CodePermissionDenied,
	NotFound:           connect.CodeNotFound,
	MethodNotAllowed:   connect.CodeUnimplemented,
	Conflict:           connect.CodeAlreadyExists,
	PreconditionFailed: connect.CodeFailedPrecondition,
	TooLarge:           connect.CodeResourceExhausted,
	Unsupported:        connect.CodeInvalidArgument,
	Unprocessable:      connect.CodeInvalidArgument,
	RateLimited:        connect.CodeResourceExhausted,
	Internal:           connect.CodeInternal,
	Unavailable:        connect.CodeUnavailable,
	Timeout:            connect.CodeDeadlineExceeded,
	NotImplemented:     connect.CodeUnimplemented,
}

// Error is an error a client may see. Message must not hold internal
// details: those belong in the log.
type Error struct {
	Code    Code
	Message string
	// Index is the position of the failing operation in a batch, or -1.
	Index int
}

func (e *Error) Error() string { return string(e.Code) + ": " + e.Message }

// Status is the HTTP status of the error.
func (e *Error) Status() int {
	if s, ok := statuses[e.Code]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// New returns an *Error with a formatted message.
func New(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...), Index: -1}
}

// AtIndex returns a copy of err marked as caused by batch operation i.
func AtIndex(err error, i int) error {
	var e *Error
	if !errors.As(err, &e) {
		return err
	}
	c := *e
	c.Index = i
	c.Message = fmt.Sprintf("op %d: %s", i, e.Message)
	return &c
}

// From returns err as an *Error. Errors that are not *Error become an
// internal error with a generic message; the caller logs the original.
func From(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		return fromConnect(ce)
	}
	return &Error{Code: Internal, Message: "internal error", Index: -1}
}

// Is reports whether err is an *Error with the given code.
func Is(err error, code Code) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

const (
	codeHeader  = "Dotdo-Error-Code"
	indexHeader = "Dotdo-Error-Index"
)

// ToConnect converts err for a Connect handler. The dotdo code and batch
// index travel in error metadata, so FromConnect restores them exactly.
func ToConnect(err error) error {
	if err == nil {
		return nil
	}
	e := From(err)
	cc, ok := connectCodes[e.Code]
	if !ok {
		cc = connect.CodeInternal
	}
	ce := connect.NewError(cc, errors.New(e.Message))
	ce.Meta().Set(codeHeader, string(e.Code))
	if e.Index >= 0 {
		ce.Meta().Set(indexHeader, strconv.Itoa(e.Index))
	}
	return ce
}

func fromConnect(ce *connect.Error) *Error {
	e := &Error{Code: Code(ce.Meta().Get(codeHeader)), Message: ce.Message(), Index: -1}
	if _, known := statuses[e.Code]; !known {
		switch ce.Code() {
		case connect.CodeUnavailable, connect.CodeCanceled:
			e.Code, e.Message = Unavailable, "service unavailable"
		case connect.CodeDeadlineExceeded:
			e.Code, e.Message = Timeout, "service timed out"
		case connect.CodeUnauthenticated:
			e.Code = Unauthenticated
		default:
			e.Code, e.Message = Internal, "internal error"
		}
	}
	if s := ce.Meta().Get(indexHeader); s != "" {
		if i, err := strconv.Atoi(s); err == nil {
			e.Index = i
		}
	}
	return e
}

// WriteHTTP writes err as the JSON error envelope with its status.
func WriteHTTP(w http.ResponseWriter, requestID string, err error) {
	e := From(err)
	type body struct {
		Code      Code   `json:"code"`
		Message   string `json:"message"`
		RequestID string `json:"requestId,omitempty"`
		Index     *int   `json:"index,omitempty"`
	}
	b := body{Code: e.Code, Message: e.Message, RequestID: requestID}
	if e.Index >= 0 {
		b.Index = &e.Index
	}
	out, _ := json.Marshal(map[string]body{"error": b})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(out)+1))
	w.WriteHeader(e.Status())
	w.Write(append(out, '\n'))
}

// ReadBody reads r's whole body. Reading fails as BodyError says: 413
// when the body is larger than the limit the gateway set with
// http.MaxBytesReader, 400 otherwise.
func ReadBody(r *http.Request) ([]byte, error) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, BodyError(err)
	}
	return b, nil
}

// BodyError is the error to answer when reading a request body failed
// with err: TooLarge naming the limit when err is the gateway's body
// limit (*http.MaxBytesError), Invalid otherwise.
func BodyError(err error) *Error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return New(TooLarge, "request body is larger than %d bytes", mbe.Limit)
	}
	return New(Invalid, "reading request body: %v", err)
}
