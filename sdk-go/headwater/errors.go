package headwater

import (
	"errors"

	pb "github.com/headwater-streaming/headwater/sdk-go/internal/pb/udfv1"
	"github.com/headwater-streaming/headwater/sdk-go/internal/worker"
)

// TransientError marks a failure that may succeed if retried (a timeout, an unavailable
// dependency): the host retries the record with backoff, then dead-letters it. Make one
// with [Transient]; find one with errors.As.
type TransientError struct{ Err error }

func (e *TransientError) Error() string {
	if e.Err == nil {
		return "transient error"
	}
	return e.Err.Error()
}

func (e *TransientError) Unwrap() error { return e.Err }

func (*TransientError) transient() bool { return true }

// PermanentError marks a failure that will happen again: the record goes to the
// dead-letter queue at once. Errors are permanent unless marked transient, so this only
// matters to override a [TransientError] deeper in the chain. Make one with [Permanent].
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string {
	if e.Err == nil {
		return "permanent error"
	}
	return e.Err.Error()
}

func (e *PermanentError) Unwrap() error { return e.Err }

func (*PermanentError) transient() bool { return false }

// Transient marks err as transient: return it from a function for failures worth retrying.
// Transient(nil) is nil.
//
//	resp, err := client.Do(req)
//	if err != nil {
//		return Enriched{}, headwater.Transient(err)
//	}
func Transient(err error) error {
	if err == nil {
		return nil
	}
	return &TransientError{Err: err}
}

// Permanent marks err as permanent (the default for any error). Permanent(nil) is nil.
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

// failure is the record error for an error a user's function returned.
func failure(err error) *worker.Failure {
	class := pb.ErrorClass_ERROR_CLASS_PERMANENT
	if IsTransient(err) {
		class = pb.ErrorClass_ERROR_CLASS_TRANSIENT
	}
	return &worker.Failure{Class: class, Message: worker.OneLine(err.Error()), Traceback: worker.Describe(err)}
}
