package command

import (
	"errors"
	"fmt"
)

// userError is an error whose message is meant for the person who asked:
// a refusal, a bad argument, a safety check. Anything else a handler returns
// is internal: logged in full and answered with "internal error, trace <id>".
type userError struct {
	msg string
	err error
}

func (e *userError) Error() string { return e.msg }
func (e *userError) Unwrap() error { return e.err }

// UserError marks err as one the person should read as it is.
func UserError(err error) error {
	if err == nil {
		return nil
	}
	return &userError{msg: err.Error(), err: err}
}

// UserErrorf formats a user error; %w wraps as in fmt.Errorf.
func UserErrorf(format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	return &userError{msg: err.Error(), err: errors.Unwrap(err)}
}

// IsUserError reports whether err (or an error it wraps) is a user error,
// and returns its message.
func IsUserError(err error) (string, bool) {
	var ue *userError
	if errors.As(err, &ue) {
		return ue.msg, true
	}
	return "", false
}

// ErrCancelled is the cause of a job context cancelled by "cancel <job>".
var ErrCancelled = errors.New("cancelled on request")

// errShutdown is the cause of a job context cancelled because this replica
// is stopping: the job stays open for another replica to take over.
var errShutdown = errors.New("replica shutting down")
