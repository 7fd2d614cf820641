package weights

import (
	"context"
	"crypto/sha1" //nolint:gosec // git blob ids are sha1; an integrity check, not security
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// opener opens a file's body from offset on. resumed reports that the body
// starts at offset (a 206 answer); otherwise it starts at 0.
type opener func(ctx context.Context, offset int64) (body io.ReadCloser, resumed bool, err error)

// fileTask is one file to bring to Dest.
type fileTask struct {
	// Name is the file's path in the model (for messages).
	Name string
	// Dest is the final path; Dest+".incomplete" holds a partial download.
	Dest string
	// Size is the expected size, or -1 when unknown.
	Size int64
	// Digest, when not nil, returns a fresh hash whose hex sum must equal Want.
	Digest func() hash.Hash
	Want   string
	Open   opener
	// direct is set after a checksum mismatch: the next attempts skip the
	// Dragonfly peer.
	direct *atomic.Bool
}

func (t *fileTask) distrustPeer() {
	if t.direct != nil {
		t.direct.Store(true)
	}
}

// sha256Digest checks LFS objects, whose ETag is their sha256.
func sha256Digest() hash.Hash { return sha256.New() }

// gitBlobDigest checks a regular git file against its blob id:
// sha1("blob <size>\x00" + content).
func gitBlobDigest(size int64) func() hash.Hash {
	return func() hash.Hash {
		h := sha1.New() //nolint:gosec // see import
		_, _ = io.WriteString(h, "blob "+strconv.FormatInt(size, 10)+"\x00")
		return h
	}
}

const incompleteSuffix = ".incomplete"

// transferer downloads fileTasks with retries, resume and verification.
type transferer struct {
	attempts int
	backoff  time.Duration
	progress *Progress
	log      *slog.Logger
	// fresh counts body bytes received from origins in this run.
	fresh *Progress
}

// run downloads t to t.Dest, retrying transient failures (each retry resumes
// from what the ".incomplete" file holds).
func (x *transferer) run(ctx context.Context, t fileTask) error {
	var err error
	for attempt := 1; attempt <= x.attempts; attempt++ {
		err = x.once(ctx, t)
		if err == nil || ctx.Err() != nil || !retryable(err) {
			break
		}
		x.log.Warn("fetch: retrying", "file", t.Name, "attempt", attempt, "err", err)
		if attempt < x.attempts {
			select {
			case <-ctx.Done():
			case <-time.After(x.backoff * time.Duration(attempt)):
			}
		}
	}
	if err != nil {
		return &FileError{File: t.Name, Err: err}
	}
	return nil
}

func (x *transferer) once(ctx context.Context, t fileTask) (err error) {
	part := t.Dest + incompleteSuffix
	if err := os.MkdirAll(filepath.Dir(t.Dest), 0o755); err != nil {
		return diskError(err)
	}
	f, err := os.OpenFile(part, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return diskError(err)
	}
	defer func() {
		if f != nil {
			_ = f.Close()
		}
	}()
	have, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return err
	}
	if t.Size >= 0 && have > t.Size {
		have = 0
	}
	var h hash.Hash
	if t.Digest != nil {
		h = t.Digest()
	}
	if have > 0 && h != nil {
		// Hash what a previous attempt left, so the sum covers the whole file.
		if _, err := io.Copy(h, io.NewSectionReader(f, 0, have)); err != nil {
			return err
		}
	}
	if t.Size < 0 || have < t.Size {
		body, resumed, err := t.Open(ctx, have)
		if err != nil {
			return err
		}
		defer body.Close()
		if !resumed && have > 0 {
			x.progress.Add(-have)
			have = 0
			if h != nil {
				h.Reset()
			}
		}
		if err := f.Truncate(have); err != nil {
			return diskError(err)
		}
		if _, err := f.Seek(have, io.SeekStart); err != nil {
			return err
		}
		if t.Size >= 0 {
			// Never accept more than the expected size.
			body = struct {
				io.Reader
				io.Closer
			}{io.LimitReader(body, t.Size-have+1), body}
		}
		w := io.Writer(f)
		if h != nil {
			w = io.MultiWriter(f, h)
		}
		n, err := io.CopyBuffer(&countingWriter{w: w, p: x.progress, fresh: x.fresh}, body, make([]byte, 1<<20))
		have += n
		if err != nil {
			return diskError(err)
		}
	}
	if t.Size >= 0 && have != t.Size {
		_ = os.Remove(part)
		x.progress.Add(-have)
		t.distrustPeer()
		return fmt.Errorf("%w: size %d, want %d", ErrChecksum, have, t.Size)
	}
	if h != nil {
		if got := hex.EncodeToString(h.Sum(nil)); got != t.Want {
			_ = os.Remove(part)
			x.progress.Add(-have)
			t.distrustPeer()
			return fmt.Errorf("%w: got %s, want %s", ErrChecksum, got, t.Want)
		}
	}
	if err := f.Sync(); err != nil {
		return diskError(err)
	}
	if err := f.Close(); err != nil {
		f = nil
		return diskError(err)
	}
	f = nil
	return diskError(os.Rename(part, t.Dest))
}

// countingWriter adds written bytes to the progress counters.
type countingWriter struct {
	w     io.Writer
	p     *Progress
	fresh *Progress
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.p.Add(int64(n))
	c.fresh.Add(int64(n))
	return n, err
}

// runAll downloads tasks, at most parallel at a time; the first error that
// retries did not cure cancels the rest.
func (x *transferer) runAll(ctx context.Context, tasks []fileTask, parallel int) error {
	if parallel < 1 {
		parallel = 1
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	sem := make(chan struct{}, parallel)
	for _, t := range tasks {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := x.run(ctx, t); err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
				cancel()
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return ctx.Err()
}
