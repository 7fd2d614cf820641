package weights

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"syscall"
)

// Sentinel errors a caller can branch on with errors.Is.
var (
	// ErrUnauthorized: the origin answered 401 (no token or a bad one).
	ErrUnauthorized = errors.New("unauthorized (401): set HF_TOKEN or --token-file for a gated or private repository")
	// ErrForbidden: the origin answered 403 (the token may not read it).
	ErrForbidden = errors.New("forbidden (403): the token has no access")
	// ErrNotFound: the origin answered 404.
	ErrNotFound = errors.New("not found (404)")
	// ErrChecksum: a downloaded file does not match its size or sha256.
	ErrChecksum = errors.New("checksum mismatch")
	// ErrNoSpace: the disk is full.
	ErrNoSpace = errors.New("no space left on device")
)

// FileError names the file (path in the model) an error happened on.
type FileError struct {
	// File is the path of the file inside the model, or the URL.
	File string
	Err  error
}

func (e *FileError) Error() string { return fmt.Sprintf("%s: %v", e.File, e.Err) }
func (e *FileError) Unwrap() error { return e.Err }

// statusError maps an unexpected HTTP status to a sentinel error.
func statusError(resp *http.Response) error {
	switch resp.StatusCode {
	case http.StatusUnauthorized:
		return ErrUnauthorized
	case http.StatusForbidden:
		return ErrForbidden
	case http.StatusNotFound:
		return ErrNotFound
	}
	return &HTTPStatusError{Code: resp.StatusCode, URL: resp.Request.URL.Redacted()}
}

// HTTPStatusError is an unexpected HTTP status other than 401/403/404.
type HTTPStatusError struct {
	Code int
	URL  string
}

func (e *HTTPStatusError) Error() string {
	return fmt.Sprintf("unexpected status %d %s from %s", e.Code, http.StatusText(e.Code), e.URL)
}

// retryable reports whether a transfer may succeed if tried again: a broken
// connection or a server error, not a refusal.
func retryable(err error) bool {
	if errors.Is(err, ErrUnauthorized) || errors.Is(err, ErrForbidden) || errors.Is(err, ErrNotFound) || errors.Is(err, ErrNoSpace) {
		return false
	}
	var se *HTTPStatusError
	if errors.As(err, &se) {
		return se.Code >= 500 || se.Code == http.StatusTooManyRequests
	}
	return true
}

// diskError turns ENOSPC into ErrNoSpace, keeping the cause.
func diskError(err error) error {
	if errors.Is(err, syscall.ENOSPC) {
		return fmt.Errorf("%w: %w", ErrNoSpace, err)
	}
	return err
}

// Reasons a fetch failed, in the words of the ModelServing's WeightsReady
// condition (CamelCase, as Kubernetes reasons are).
const (
	ReasonSourceNotFound   = "SourceNotFound"
	ReasonUnauthorized     = "Unauthorized"
	ReasonForbidden        = "Forbidden"
	ReasonChecksumMismatch = "ChecksumMismatch"
	ReasonDiskFull         = "DiskFull"
	ReasonUnreachable      = "SourceUnreachable"
	ReasonFetchFailed      = "FetchFailed"
)

// FailureReason names why err ended a fetch.
func FailureReason(err error) string {
	var (
		netErr net.Error
		opErr  *net.OpError
		dnsErr *net.DNSError
	)
	switch {
	case errors.Is(err, ErrNotFound):
		return ReasonSourceNotFound
	case errors.Is(err, ErrUnauthorized):
		return ReasonUnauthorized
	case errors.Is(err, ErrForbidden):
		return ReasonForbidden
	case errors.Is(err, ErrChecksum):
		return ReasonChecksumMismatch
	case errors.Is(err, ErrNoSpace):
		return ReasonDiskFull
	case errors.As(err, &dnsErr), errors.As(err, &opErr), errors.Is(err, syscall.ECONNREFUSED), errors.As(err, &netErr):
		return ReasonUnreachable
	}
	return ReasonFetchFailed
}
