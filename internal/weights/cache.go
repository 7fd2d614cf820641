package weights

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The node cache keeps its bookkeeping under Into/.halyard:
//
//	locks/<key>.lock     flock held while a fetch of <key> runs
//	done/<key>/<hash>    done-marker of one (source, revision, filters)
//	used/<key>           mtime = last fetch (or cache hit) of <key>
const metaDir = ".halyard"

// lockPollInterval is how often a fetch waiting for another's lock checks
// its context.
const lockPollInterval = 100 * time.Millisecond

// lockModel takes the exclusive lock of key, waiting for another process's
// fetch of the same model to finish (or ctx to end).
func lockModel(ctx context.Context, into, key string, log *slog.Logger) (func(), error) {
	dir := filepath.Join(into, metaDir, "locks")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("lock: %w", diskError(err))
	}
	f, err := os.OpenFile(filepath.Join(dir, key+".lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	waiting := false
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			_ = f.Close()
			return nil, fmt.Errorf("lock %s: %w", key, err)
		}
		if !waiting {
			log.Info("fetch: waiting for another fetch of the same model on this node", "model", key)
			waiting = true
		}
		t := time.NewTimer(lockPollInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			_ = f.Close()
			return nil, fmt.Errorf("lock %s: %w", key, ctx.Err())
		case <-t.C:
		}
	}
	return func() {
		_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
		_ = f.Close()
	}, nil
}

// tryLock takes key's lock without waiting; ok is false when it is held.
func tryLock(into, key string) (unlock func(), ok bool) {
	f, err := os.OpenFile(filepath.Join(into, metaDir, "locks", key+".lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, false
	}
	if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil {
		_ = f.Close()
		return nil, false
	}
	return func() {
		_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
		_ = f.Close()
	}, true
}

// doneMarker records a complete fetch, so that a restart skips the network.
type doneMarker struct {
	Source string    `json:"source"`
	Path   string    `json:"path"`
	Commit string    `json:"commit,omitempty"`
	Files  int       `json:"files"`
	Bytes  int64     `json:"bytes"`
	Time   time.Time `json:"time"`
	// Blobs stamp the checksummed files as the fetch left them.
	Blobs []fileStamp `json:"blobs,omitempty"`
}

// fileStamp is what a file looked like: a write, a truncation or a
// replacement changes its size, modification time or inode, and most
// writes change its first or last stampEdge bytes (which a write within the
// file system's timestamp granularity would not show in the mtime).
type fileStamp struct {
	// Path is relative to the node cache.
	Path  string `json:"path"`
	Size  int64  `json:"size"`
	MTime int64  `json:"mtimeNs"`
	Inode uint64 `json:"inode,omitempty"`
	// Edges is the sha256 of the first and last stampEdge bytes.
	Edges string `json:"edges"`
}

// stampEdge is how much of each end of a file a stamp hashes.
const stampEdge = 64 << 10

func stampOf(path string) (fileStamp, bool) {
	f, err := os.Open(path)
	if err != nil {
		return fileStamp{}, false
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fileStamp{}, false
	}
	s := fileStamp{Size: st.Size(), MTime: st.ModTime().UnixNano()}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		s.Inode = sys.Ino
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, min(stampEdge, s.Size))); err != nil {
		return fileStamp{}, false
	}
	if tail := max(s.Size-stampEdge, stampEdge); tail < s.Size {
		if _, err := io.Copy(h, io.NewSectionReader(f, tail, s.Size-tail)); err != nil {
			return fileStamp{}, false
		}
	}
	s.Edges = hex.EncodeToString(h.Sum(nil))
	return s, true
}

// stampFiles stamps files (absolute paths under into).
func stampFiles(into string, files []string) []fileStamp {
	out := make([]fileStamp, 0, len(files))
	for _, f := range files {
		s, ok := stampOf(f)
		rel, err := filepath.Rel(into, f)
		if !ok || err != nil {
			continue
		}
		s.Path = filepath.ToSlash(rel)
		out = append(out, s)
	}
	return out
}

// changed returns the stamped files (relative to into) that differ from
// their stamps or are gone.
func (m doneMarker) changed(into string) []string {
	var out []string
	for _, want := range m.Blobs {
		if !safeRelPath(want.Path) {
			out = append(out, want.Path)
			continue
		}
		got, ok := stampOf(filepath.Join(into, filepath.FromSlash(want.Path)))
		got.Path = want.Path
		if !ok || got != want {
			out = append(out, want.Path)
		}
	}
	return out
}

func doneMarkerPath(into, key string, src Source, opts Options) string {
	h := sha256.New()
	rev := opts.Revision
	if rev == "" {
		rev = src.Revision
	}
	for _, s := range [][]string{{src.String(), rev}, opts.Include, {"--"}, opts.Exclude} {
		for _, x := range s {
			_, _ = h.Write([]byte(x + "\x00"))
		}
	}
	return filepath.Join(into, metaDir, "done", key, hex.EncodeToString(h.Sum(nil))[:16]+".json")
}

func readDoneMarker(path string) (doneMarker, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return doneMarker{}, false
	}
	var m doneMarker
	if json.Unmarshal(b, &m) != nil || m.Path == "" {
		return doneMarker{}, false
	}
	if _, err := os.Stat(m.Path); err != nil {
		return doneMarker{}, false
	}
	return m, true
}

func writeDoneMarker(path string, m doneMarker) error {
	m.Time = time.Now().UTC()
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(path, b)
}

// writeFileAtomic writes b to path through a temporary file and a rename.
func writeFileAtomic(path string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		_ = tmp.Close()
		_ = os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		_ = os.Remove(tmp.Name())
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func touchUsed(into, key string) {
	p := filepath.Join(into, metaDir, "used", key)
	now := time.Now()
	if err := os.Chtimes(p, now, now); err != nil {
		_ = os.MkdirAll(filepath.Dir(p), 0o755)
		_ = os.WriteFile(p, nil, 0o644)
	}
}

// CacheEntry is one model in a node cache.
type CacheEntry struct {
	Key      string
	Bytes    int64
	LastUsed time.Time
}

// List returns the models of a node cache, least recently used first.
func List(into string) ([]CacheEntry, error) {
	des, err := os.ReadDir(into)
	if err != nil {
		return nil, err
	}
	var out []CacheEntry
	for _, de := range des {
		if !de.IsDir() || strings.HasPrefix(de.Name(), ".") {
			continue
		}
		e := CacheEntry{Key: de.Name(), Bytes: dirBytes(filepath.Join(into, de.Name()))}
		if st, err := os.Stat(filepath.Join(into, metaDir, "used", de.Name())); err == nil {
			e.LastUsed = st.ModTime()
		}
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b CacheEntry) int { return a.LastUsed.Compare(b.LastUsed) })
	return out, nil
}

// dirBytes sums the sizes of regular files under dir (symlinks not followed,
// so a hub snapshot's links do not count twice).
func dirBytes(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}

// Evict removes least recently used models from the node cache into until it
// holds at most maxBytes, never keep and never a model whose lock another
// fetch holds. It returns the keys removed.
func Evict(into string, maxBytes int64, keep string, log *slog.Logger) ([]string, error) {
	entries, err := List(into)
	if err != nil {
		return nil, err
	}
	var total int64
	for _, e := range entries {
		total += e.Bytes
	}
	var evicted []string
	for _, e := range entries {
		if total <= maxBytes {
			break
		}
		if e.Key == keep {
			continue
		}
		unlock, ok := tryLock(into, e.Key)
		if !ok {
			continue
		}
		// The done-markers go first: a model is never seen complete while
		// it is being removed.
		err := os.RemoveAll(filepath.Join(into, metaDir, "done", e.Key))
		if err == nil {
			err = os.RemoveAll(filepath.Join(into, e.Key))
		}
		_ = os.Remove(filepath.Join(into, metaDir, "used", e.Key))
		unlock()
		if err != nil {
			return evicted, fmt.Errorf("evict %s: %w", e.Key, err)
		}
		log.Info("fetch: evicted from the node cache", "model", e.Key, "bytes", e.Bytes, "last_used", e.LastUsed)
		total -= e.Bytes
		evicted = append(evicted, e.Key)
	}
	return evicted, nil
}
