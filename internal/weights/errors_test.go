package weights_test

import (
	"errors"
	"fmt"
	"net"
	"syscall"
	"testing"

	"github.com/halyard-dev/halyard/internal/weights"
)

func TestFailureReason(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("fetch hf://o/r: %w", &weights.FileError{File: "a", Err: weights.ErrNotFound}), weights.ReasonSourceNotFound},
		{fmt.Errorf("x: %w", weights.ErrUnauthorized), weights.ReasonUnauthorized},
		{fmt.Errorf("x: %w", weights.ErrForbidden), weights.ReasonForbidden},
		{&weights.FileError{File: "m.safetensors", Err: fmt.Errorf("%w: got a, want b", weights.ErrChecksum)}, weights.ReasonChecksumMismatch},
		{fmt.Errorf("%w: %w", weights.ErrNoSpace, syscall.ENOSPC), weights.ReasonDiskFull},
		{&net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, weights.ReasonUnreachable},
		{fmt.Errorf("get: %w", &net.DNSError{Err: "no such host", Name: "hub"}), weights.ReasonUnreachable},
		{&weights.HTTPStatusError{Code: 500, URL: "u"}, weights.ReasonFetchFailed},
		{errors.New("something else"), weights.ReasonFetchFailed},
	} {
		if got := weights.FailureReason(tc.err); got != tc.want {
			t.Errorf("FailureReason(%v) = %s, want %s", tc.err, got, tc.want)
		}
	}
}
