package sdm

/*
#include <stdlib.h>
#include "sdm.h"
*/
import "C"

import "fmt"

// Kind is what went wrong, independent of the language: the same kinds and numbers as Rust's
// ErrorKind, Python's exception classes and C's sdm_status. A Kind is also an error, so
// errors.Is(err, sdm.ErrUnauthenticated) works with the Err* sentinels below.
type Kind int

// The error kinds. 1 to 13 are shared with every sdm surface; 100 and up come from the C
// interface itself and mean a bug in this package or in libsdm.
const (
	KindInvalidToken       Kind = 1
	KindUnauthenticated    Kind = 2
	KindForbidden          Kind = 3
	KindResourceNotFound   Kind = 4
	KindAmbiguousResource  Kind = 5
	KindAPIUnreachable     Kind = 6
	KindGatewayUnreachable Kind = 7
	KindUpstreamRefused    Kind = 8
	KindPortInUse          Kind = 9
	KindTimeout            Kind = 10
	KindClosed             Kind = 11
	KindInvalidArgument    Kind = 12
	KindInternal           Kind = 13
	KindNullArgument       Kind = 100
	KindPanic              Kind = 101
	KindUnknown            Kind = 102
	KindBufferTooSmall     Kind = 103
)

// Sentinels for errors.Is: errors.Is(err, sdm.ErrAmbiguousResource) is true when err is (or
// wraps) an *Error of that kind.
var (
	ErrInvalidToken       error = KindInvalidToken
	ErrUnauthenticated    error = KindUnauthenticated
	ErrForbidden          error = KindForbidden
	ErrResourceNotFound   error = KindResourceNotFound
	ErrAmbiguousResource  error = KindAmbiguousResource
	ErrAPIUnreachable     error = KindAPIUnreachable
	ErrGatewayUnreachable error = KindGatewayUnreachable
	ErrUpstreamRefused    error = KindUpstreamRefused
	ErrPortInUse          error = KindPortInUse
	ErrTimeout            error = KindTimeout
	ErrClosed             error = KindClosed
	ErrInvalidArgument    error = KindInvalidArgument
	ErrInternal           error = KindInternal
)

// String is the kind's snake_case name, e.g. "resource_not_found".
func (k Kind) String() string {
	return C.GoString(C.sdm_status_name(C.int(k)))
}

// Error makes a Kind usable as a sentinel error.
func (k Kind) Error() string { return "sdm: " + k.String() }

// Error is a failure reported by libsdm.
type Error struct {
	// Kind is what went wrong; branch on it (or use errors.Is with the Err* sentinels).
	Kind Kind
	// Code is the stable number of Kind (the C sdm_status value).
	Code int
	// Message says what failed and what to do next.
	Message string
	// Retryable reports whether the same call may succeed later without anyone changing
	// anything (unreachable control plane or gateway, refused upstream, timeout).
	Retryable bool
	// Candidates lists the matching resource names for KindAmbiguousResource.
	Candidates []string
}

func (e *Error) Error() string { return fmt.Sprintf("sdm: %s: %s", e.Kind.String(), e.Message) }

// Is reports whether target is this error's Kind, so errors.Is(err, sdm.ErrClosed) works.
func (e *Error) Is(target error) bool {
	k, ok := target.(Kind)
	return ok && k == e.Kind
}

// fromC converts (and frees) an error from libsdm. A failure without an error object (which
// libsdm always provides when asked) still yields an *Error with the status's kind.
func fromC(status C.sdm_status, cerr *C.sdm_error) error {
	if cerr == nil {
		k := Kind(status)
		return &Error{Kind: k, Code: int(k), Message: k.String()}
	}
	defer C.sdm_error_free(cerr)
	k := Kind(C.sdm_error_code(cerr))
	e := &Error{
		Kind:      k,
		Code:      int(k),
		Message:   C.GoString(C.sdm_error_message(cerr)),
		Retryable: bool(C.sdm_error_retryable(cerr)),
	}
	for i := C.size_t(0); i < C.sdm_error_candidates_len(cerr); i++ {
		e.Candidates = append(e.Candidates, C.GoString(C.sdm_error_candidate(cerr, i)))
	}
	return e
}

// closedError is returned by methods of a Session or Tunnel after Close.
func closedError(what string) error {
	return &Error{Kind: KindClosed, Code: int(KindClosed), Message: what + " was closed (Close was called)"}
}
