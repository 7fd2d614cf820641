package hubtest

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"sync"
)

// Synthetic is a file generated on demand: a deterministic pseudo-random
// stream derived from a seed (the AES-CTR keystream keyed by the seed),
// readable at any offset, so that a stand-in can serve a model of
// gigabytes with ranges without holding it in memory or writing it to
// disk. Its sha256 is computed once, on first use.
type Synthetic struct {
	size  int64
	block cipher.Block

	once sync.Once
	sum  string
}

// NewSynthetic returns the size-byte file of seed.
func NewSynthetic(seed uint64, size int64) *Synthetic {
	var key [16]byte
	binary.BigEndian.PutUint64(key[:8], seed)
	binary.BigEndian.PutUint64(key[8:], ^seed)
	b, err := aes.NewCipher(key[:])
	if err != nil {
		panic("synthetic file: " + err.Error()) // a 16-byte key cannot fail
	}
	return &Synthetic{size: size, block: b}
}

// Size is the file's length in bytes.
func (s *Synthetic) Size() int64 { return s.size }

// ReadAt implements io.ReaderAt: bytes [off, off+len(p)) of the file.
func (s *Synthetic) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("synthetic file: negative offset")
	}
	if off >= s.size {
		return 0, io.EOF
	}
	want := len(p)
	if rem := s.size - off; int64(want) > rem {
		p = p[:rem]
	}
	var iv [aes.BlockSize]byte
	binary.BigEndian.PutUint64(iv[8:], uint64(off/aes.BlockSize))
	ctr := cipher.NewCTR(s.block, iv[:])
	if skip := int(off % aes.BlockSize); skip > 0 {
		var pad [aes.BlockSize]byte
		ctr.XORKeyStream(pad[:skip], pad[:skip])
	}
	clear(p)
	ctr.XORKeyStream(p, p)
	if len(p) < want {
		return len(p), io.EOF
	}
	return len(p), nil
}

// SHA256 is the hex sha256 of the whole file (its LFS object id).
func (s *Synthetic) SHA256() string {
	s.once.Do(func() {
		h := sha256.New()
		buf := make([]byte, 1<<20)
		if _, err := io.CopyBuffer(h, io.NewSectionReader(s, 0, s.size), buf); err != nil {
			panic("synthetic file: " + err.Error()) // ReadAt fails only past the end
		}
		s.sum = hex.EncodeToString(h.Sum(nil))
	})
	return s.sum
}

// Bytes reads the whole file (for small ones in tests).
func (s *Synthetic) Bytes() []byte {
	b := make([]byte, s.size)
	_, _ = s.ReadAt(b, 0)
	return b
}

var _ io.ReaderAt = (*Synthetic)(nil)
