package wasm

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
)

// TransientError marks a failure that may succeed if retried (a timeout, an unavailable
// dependency): the host retries the record with backoff, then dead-letters it.
type TransientError struct{ Err error }

func (e *TransientError) Error() string {
	if e.Err == nil {
		return "transient error"
	}
	return e.Err.Error()
}

func (e *TransientError) Unwrap() error { return e.Err }

func (*TransientError) transient() bool { return true }

// PermanentError marks a failure that will happen again (the default for any error).
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string {
	if e.Err == nil {
		return "permanent error"
	}
	return e.Err.Error()
}

func (e *PermanentError) Unwrap() error { return e.Err }

func (*PermanentError) transient() bool { return false }

// Transient marks err as transient. Transient(nil) is nil.
func Transient(err error) error {
	if err == nil {
		return nil
	}
	return &TransientError{Err: err}
}

// Permanent marks err as permanent. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &PermanentError{Err: err}
}

// IsTransient reports whether err is retried by the host: whether the outermost
// [TransientError] or [PermanentError] in its chain is a TransientError.
func IsTransient(err error) bool {
	var mark interface{ transient() bool }
	return errors.As(err, &mark) && mark.transient()
}

// failure is one record's error as the host gets it.
type failure struct {
	transient bool
	message   string
	detail    string
}

func (f *failure) Error() string { return f.message }

func permanentf(format string, args ...any) *failure {
	return &failure{message: fmt.Sprintf(format, args...)}
}

// fail turns an error a function returned into a record failure: its message on one line,
// and the chain of error types as the detail.
func fail(err error) *failure {
	if f, ok := err.(*failure); ok {
		return f
	}
	var types []string
	for e := err; e != nil; e = errors.Unwrap(e) {
		types = append(types, reflect.TypeOf(e).String())
	}
	return &failure{
		transient: IsTransient(err),
		message:   strings.Join(strings.Fields(err.Error()), " "),
		detail:    "error chain: " + strings.Join(types, " -> "),
	}
}
