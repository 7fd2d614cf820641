package weights

import "sync/atomic"

// Progress counts bytes of a fetch. It is safe for concurrent use, and a nil
// *Progress counts nothing. Done includes bytes found already on disk (a
// resumed partial file or a cached blob); Total is known once the file list
// is.
type Progress struct {
	done, total atomic.Int64
	files       atomic.Int64
	fallbacks   atomic.Int64
}

func (p *Progress) addFallback() {
	if p != nil {
		p.fallbacks.Add(1)
	}
}

// Fallbacks returns the downloads that went to the origin because the
// Dragonfly peer failed.
func (p *Progress) Fallbacks() int64 {
	if p == nil {
		return 0
	}
	return p.fallbacks.Load()
}

// Add adds n (possibly negative) to the done bytes.
func (p *Progress) Add(n int64) {
	if p != nil {
		p.done.Add(n)
	}
}

func (p *Progress) addTotal(n int64, files int) {
	if p != nil {
		p.total.Add(n)
		p.files.Add(int64(files))
	}
}

// Done returns the bytes done so far.
func (p *Progress) Done() int64 {
	if p == nil {
		return 0
	}
	return p.done.Load()
}

// Total returns the bytes of the whole fetch, 0 while unknown.
func (p *Progress) Total() int64 {
	if p == nil {
		return 0
	}
	return p.total.Load()
}

// Files returns the number of files of the fetch.
func (p *Progress) Files() int64 {
	if p == nil {
		return 0
	}
	return p.files.Load()
}
