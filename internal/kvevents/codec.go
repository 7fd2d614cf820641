package kvevents

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"
)

// Format selects how events are laid out inside a batch. The batch itself is
// always the array [ts, events, data_parallel_rank?].
type Format int

const (
	// FormatArray writes each event as a positional array whose first element
	// is the tag, as msgspec does for structs declared array_like=True,
	// tag=True, omit_defaults=True: vLLM's encoding before PR #42892 and the
	// one DESIGN.md §5 describes.
	FormatArray Format = iota
	// FormatMap writes each event as a map whose first key "type" holds the
	// tag, followed by the fields by name: vLLM's encoding after PR #42892
	// (vLLM 0.2x from June 2026).
	FormatMap
)

// String names the format as the command line spells it.
func (f Format) String() string {
	switch f {
	case FormatArray:
		return "array"
	case FormatMap:
		return "map"
	default:
		return fmt.Sprintf("Format(%d)", int(f))
	}
}

// ParseFormat parses "array" or "map".
func ParseFormat(s string) (Format, error) {
	switch s {
	case "array", "":
		return FormatArray, nil
	case "map":
		return FormatMap, nil
	}
	return 0, fmt.Errorf("unknown event format %q (want array or map)", s)
}

// ErrMalformed is wrapped by every error DecodeBatch returns for a payload
// that is not a valid EventBatch.
var ErrMalformed = errors.New("malformed kv event batch")

// maxDepth bounds the nesting of values skipped as unknown fields, so that a
// hostile payload cannot exhaust the stack.
const maxDepth = 32

// EncodeBatch appends the msgpack encoding of b to dst, byte for byte as
// msgspec encodes vLLM's KVEventBatch in the given format.
func EncodeBatch(dst []byte, b *Batch, f Format) ([]byte, error) {
	if f != FormatArray && f != FormatMap {
		return dst, fmt.Errorf("unknown format %v", f)
	}
	w := &appendWriter{b: dst}
	enc := msgpack.GetEncoder()
	defer msgpack.PutEncoder(enc)
	enc.Reset(w)
	n := 2
	if b.DataParallelRank != nil {
		n = 3
	}
	err := errors.Join(
		enc.EncodeArrayLen(n),
		enc.EncodeFloat64(b.TS),
		enc.EncodeArrayLen(len(b.Events)),
	)
	if err != nil {
		return dst, err
	}
	fw := fieldWriter{enc: enc, f: f}
	for i, ev := range b.Events {
		if err := fw.event(ev); err != nil {
			return dst, fmt.Errorf("events[%d]: %w", i, err)
		}
	}
	if b.DataParallelRank != nil {
		if err := enc.EncodeInt(int64(*b.DataParallelRank)); err != nil {
			return dst, err
		}
	}
	return w.b, nil
}

// appendWriter is an io.Writer that appends to a slice.
type appendWriter struct{ b []byte }

func (w *appendWriter) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}

func (w *appendWriter) WriteByte(c byte) error {
	w.b = append(w.b, c)
	return nil
}

func (w *appendWriter) WriteString(s string) (int, error) {
	w.b = append(w.b, s...)
	return len(s), nil
}

// fieldWriter writes an event's fields in declaration order. omit_defaults
// drops optional fields that are nil: in a map any of them, in an array
// only a trailing run (positions must hold), so an array event writes its
// first n fields and nil for absent ones.
type fieldWriter struct {
	enc *msgpack.Encoder
	f   Format
	n   int // array form: fields still to write
	err error
}

// begin writes the event header. fields counts the event's fields up to the
// last one written in array form; present counts those written in map form.
func (w *fieldWriter) begin(tag string, fields, present int) {
	if w.f == FormatMap {
		w.err = errors.Join(w.enc.EncodeMapLen(present+1), w.enc.EncodeString("type"), w.enc.EncodeString(tag))
		return
	}
	w.n = fields
	w.err = errors.Join(w.enc.EncodeArrayLen(fields+1), w.enc.EncodeString(tag))
}

// field writes one field unless the layout omits it: write is called when
// the value is present, nil is written when it is absent but must be.
func (w *fieldWriter) field(name string, optional, present bool, write func() error) {
	if w.err != nil {
		return
	}
	if w.f == FormatMap {
		if optional && !present {
			return
		}
		if w.err = w.enc.EncodeString(name); w.err != nil {
			return
		}
	} else {
		if w.n == 0 {
			return
		}
		w.n--
	}
	if present {
		w.err = write()
	} else {
		w.err = w.enc.EncodeNil()
	}
	if w.err != nil {
		w.err = fmt.Errorf("%s: %w", name, w.err)
	}
}

func (w *fieldWriter) hashes(name string, hs []BlockHash) {
	w.field(name, false, true, func() error {
		if err := w.enc.EncodeArrayLen(len(hs)); err != nil {
			return err
		}
		for _, h := range hs {
			if err := encodeHash(w.enc, h); err != nil {
				return err
			}
		}
		return nil
	})
}

func (w *fieldWriter) int(name string, v *int64, optional bool) {
	w.field(name, optional, v != nil, func() error { return w.enc.EncodeInt(*v) })
}

func (w *fieldWriter) str(name string, v *string, optional bool) {
	w.field(name, optional, v != nil, func() error { return w.enc.EncodeString(*v) })
}

func (w *fieldWriter) event(ev Event) error {
	switch e := ev.(type) {
	case *BlockStored:
		// Fields up to lora_name are required; extra_keys is never sent.
		fields, present := 7, 7
		for i, v := range []bool{e.GroupIdx != nil, e.KVCacheSpecKind != nil, e.KVCacheSpecSlidingWindow != nil} {
			if v {
				fields = 9 + i
				present++
			}
		}
		w.begin(TagBlockStored, fields, present)
		w.hashes("block_hashes", e.BlockHashes)
		w.field("parent_block_hash", false, e.ParentBlockHash != nil, func() error { return encodeHash(w.enc, *e.ParentBlockHash) })
		w.field("token_ids", false, true, func() error {
			if err := w.enc.EncodeArrayLen(len(e.TokenIDs)); err != nil {
				return err
			}
			for _, t := range e.TokenIDs {
				if err := w.enc.EncodeUint(uint64(t)); err != nil {
					return err
				}
			}
			return nil
		})
		w.field("block_size", false, true, func() error { return w.enc.EncodeInt(int64(e.BlockSize)) })
		w.int("lora_id", e.LoRAID, false)
		w.str("medium", e.Medium, false)
		w.str("lora_name", e.LoRAName, false)
		w.field("extra_keys", true, false, nil)
		w.int("group_idx", e.GroupIdx, true)
		w.str("kv_cache_spec_kind", e.KVCacheSpecKind, true)
		w.int("kv_cache_spec_sliding_window", e.KVCacheSpecSlidingWindow, true)
	case *BlockRemoved:
		fields, present := 2, 2
		if e.GroupIdx != nil {
			fields, present = 3, 3
		}
		w.begin(TagBlockRemoved, fields, present)
		w.hashes("block_hashes", e.BlockHashes)
		w.str("medium", e.Medium, false)
		w.int("group_idx", e.GroupIdx, true)
	case *AllBlocksCleared:
		w.begin(TagAllBlocksCleared, 0, 0)
	default:
		return fmt.Errorf("cannot encode event of type %T", ev)
	}
	return w.err
}

func encodeHash(enc *msgpack.Encoder, h BlockHash) error {
	switch {
	case h.Binary:
		return enc.EncodeBytes([]byte(h.Bytes))
	case h.Negative:
		return enc.EncodeInt(int64(h.Int))
	default:
		return enc.EncodeUint(h.Int)
	}
}

// DecodeBatch decodes one EventBatch payload. It accepts the batch as an
// array [ts, events, dp_rank?, ...] or a map with the keys ts, events and
// data_parallel_rank, and each event in array or map form (see Format).
// Unknown trailing array fields and unknown map keys are skipped; an event
// with an unknown tag decodes as *UnknownEvent. Any other deviation returns
// an error wrapping ErrMalformed; DecodeBatch never panics.
func DecodeBatch(payload []byte) (*Batch, error) {
	r := &source{payload: payload}
	r.Reset(payload)
	d := msgpack.GetDecoder()
	defer msgpack.PutDecoder(d)
	d.Reset(&r.Reader)
	b, err := decodeBatch(d, r)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if r.Len() != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrMalformed, r.Len())
	}
	return b, nil
}

func decodeBatch(d *msgpack.Decoder, r *source) (*Batch, error) {
	c, err := d.PeekCode()
	if err != nil {
		return nil, err
	}
	b := &Batch{}
	switch {
	case isArrayCode(c):
		n, err := d.DecodeArrayLen()
		if err != nil {
			return nil, err
		}
		if n < 2 {
			return nil, fmt.Errorf("batch array has %d elements, want at least 2", n)
		}
		if b.TS, err = decodeFloat(d); err != nil {
			return nil, fmt.Errorf("ts: %w", err)
		}
		if b.Events, err = decodeEvents(d, r); err != nil {
			return nil, err
		}
		if n >= 3 {
			if b.DataParallelRank, err = decodeOptInt(d); err != nil {
				return nil, fmt.Errorf("data_parallel_rank: %w", err)
			}
		}
		for i := 3; i < n; i++ {
			if err := skipValue(d, r, 1); err != nil {
				return nil, fmt.Errorf("batch[%d]: %w", i, err)
			}
		}
	case isMapCode(c):
		n, err := d.DecodeMapLen()
		if err != nil {
			return nil, err
		}
		var haveTS, haveEvents bool
		for i := 0; i < n; i++ {
			key, err := decodeKey(d, r)
			if err != nil {
				return nil, err
			}
			switch key {
			case "ts":
				haveTS = true
				if b.TS, err = decodeFloat(d); err != nil {
					return nil, fmt.Errorf("ts: %w", err)
				}
			case "events":
				haveEvents = true
				if b.Events, err = decodeEvents(d, r); err != nil {
					return nil, err
				}
			case "data_parallel_rank":
				if b.DataParallelRank, err = decodeOptInt(d); err != nil {
					return nil, fmt.Errorf("data_parallel_rank: %w", err)
				}
			default:
				if err := skipValue(d, r, 1); err != nil {
					return nil, fmt.Errorf("%s: %w", key, err)
				}
			}
		}
		if !haveTS || !haveEvents {
			return nil, errors.New("batch map lacks ts or events")
		}
	default:
		return nil, fmt.Errorf("batch is neither an array nor a map (code 0x%02x)", c)
	}
	return b, nil
}

func decodeEvents(d *msgpack.Decoder, r *source) ([]Event, error) {
	n, err := d.DecodeArrayLen()
	if err != nil {
		return nil, fmt.Errorf("events: %w", err)
	}
	if n < 0 {
		return nil, errors.New("events: nil")
	}
	evs := make([]Event, 0, min(n, r.Len()))
	for i := 0; i < n; i++ {
		ev, err := decodeEvent(d, r)
		if err != nil {
			return nil, fmt.Errorf("events[%d]: %w", i, err)
		}
		evs = append(evs, ev)
	}
	return evs, nil
}

// wideEvent holds the fields of every known event type, so that a map-form
// event can be read in any key order before its tag is known.
type wideEvent struct {
	tag                               string
	hashes                            []BlockHash
	haveHashes                        bool
	parent                            *BlockHash
	tokens                            []uint32
	haveTokens                        bool
	blockSize                         int64
	haveBlockSize                     bool
	loraID, groupIdx, slidingWindow   *int64
	medium, loraName, kvCacheSpecKind *string
}

// Positional fields of the array forms, after the tag.
var (
	blockStoredFields  = []string{"block_hashes", "parent_block_hash", "token_ids", "block_size", "lora_id", "medium", "lora_name", "extra_keys", "group_idx", "kv_cache_spec_kind", "kv_cache_spec_sliding_window"}
	blockRemovedFields = []string{"block_hashes", "medium", "group_idx"}
)

func decodeEvent(d *msgpack.Decoder, r *source) (Event, error) {
	c, err := d.PeekCode()
	if err != nil {
		return nil, err
	}
	var w wideEvent
	switch {
	case isArrayCode(c):
		n, err := d.DecodeArrayLen()
		if err != nil {
			return nil, err
		}
		if n < 1 {
			return nil, errors.New("empty event array has no tag")
		}
		if w.tag, err = decodeKey(d, r); err != nil {
			return nil, fmt.Errorf("tag: %w", err)
		}
		var names []string
		switch w.tag {
		case TagBlockStored:
			names = blockStoredFields
		case TagBlockRemoved:
			names = blockRemovedFields
		}
		for i := 1; i < n; i++ {
			name := ""
			if i-1 < len(names) {
				name = names[i-1]
			}
			if err := w.decodeField(d, r, name); err != nil {
				return nil, fmt.Errorf("%s[%d]: %w", w.tag, i, err)
			}
		}
	case isMapCode(c):
		n, err := d.DecodeMapLen()
		if err != nil {
			return nil, err
		}
		haveTag := false
		for i := 0; i < n; i++ {
			key, err := decodeKey(d, r)
			if err != nil {
				return nil, err
			}
			if key == "type" {
				if w.tag, err = decodeKey(d, r); err != nil {
					return nil, fmt.Errorf("type: %w", err)
				}
				haveTag = true
				continue
			}
			if err := w.decodeField(d, r, key); err != nil {
				return nil, fmt.Errorf("%s: %w", key, err)
			}
		}
		if !haveTag {
			return nil, errors.New("event map has no type")
		}
	default:
		return nil, fmt.Errorf("event is neither an array nor a map (code 0x%02x)", c)
	}
	return w.event()
}

func (w *wideEvent) decodeField(d *msgpack.Decoder, r *source, name string) error {
	var err error
	switch name {
	case "block_hashes":
		w.haveHashes = true
		w.hashes, err = decodeHashes(d, r)
	case "parent_block_hash":
		w.parent, err = decodeOptHash(d, r)
	case "token_ids":
		w.haveTokens = true
		w.tokens, err = decodeTokens(d, r)
	case "block_size":
		w.haveBlockSize = true
		w.blockSize, err = d.DecodeInt64()
		if err == nil && (w.blockSize <= 0 || w.blockSize > math.MaxInt32) {
			err = fmt.Errorf("block_size %d out of range", w.blockSize)
		}
	case "lora_id":
		w.loraID, err = decodeOptInt64(d)
	case "medium":
		w.medium, err = decodeOptString(d, r)
	case "lora_name":
		w.loraName, err = decodeOptString(d, r)
	case "group_idx":
		w.groupIdx, err = decodeOptInt64(d)
	case "kv_cache_spec_kind":
		w.kvCacheSpecKind, err = decodeOptString(d, r)
	case "kv_cache_spec_sliding_window":
		w.slidingWindow, err = decodeOptInt64(d)
	default:
		err = skipValue(d, r, 2)
	}
	return err
}

func (w *wideEvent) event() (Event, error) {
	switch w.tag {
	case TagBlockStored:
		if !w.haveHashes || !w.haveTokens || !w.haveBlockSize {
			return nil, errors.New("BlockStored lacks block_hashes, token_ids or block_size")
		}
		return &BlockStored{
			BlockHashes:              w.hashes,
			ParentBlockHash:          w.parent,
			TokenIDs:                 w.tokens,
			BlockSize:                int(w.blockSize),
			LoRAID:                   w.loraID,
			Medium:                   w.medium,
			LoRAName:                 w.loraName,
			GroupIdx:                 w.groupIdx,
			KVCacheSpecKind:          w.kvCacheSpecKind,
			KVCacheSpecSlidingWindow: w.slidingWindow,
		}, nil
	case TagBlockRemoved:
		if !w.haveHashes {
			return nil, errors.New("BlockRemoved lacks block_hashes")
		}
		return &BlockRemoved{BlockHashes: w.hashes, Medium: w.medium, GroupIdx: w.groupIdx}, nil
	case TagAllBlocksCleared:
		return &AllBlocksCleared{}, nil
	default:
		return &UnknownEvent{Type: w.tag}, nil
	}
}

// source is the payload being decoded. The decoder reads it through the
// embedded bytes.Reader, which needs no buffering, so the position of the
// next value is known and declared lengths can be checked before the
// library allocates them.
type source struct {
	bytes.Reader
	payload []byte
}

// inPlace reads a string or binary value without copying it: the bytes
// alias the payload. The decoder reads through the same bytes.Reader with
// no buffer of its own, so moving the reader past the value is safe.
func (r *source) inPlace() ([]byte, error) {
	hdr, n, err := r.header()
	if err != nil {
		return nil, err
	}
	off := len(r.payload) - r.Len()
	if _, err := r.Seek(int64(hdr+n), io.SeekCurrent); err != nil {
		return nil, err
	}
	return r.payload[off+hdr : off+hdr+n], nil
}

// checkLen refuses a string, binary or extension value whose declared length
// exceeds what is left of the payload: a 6-byte header must not make the
// decoder allocate gigabytes.
func (r *source) checkLen() error {
	_, _, err := r.header()
	return err
}

// header returns the header size and declared length of the string, binary
// or extension value at the reader's position (0, 0 for other values), and
// an error when the length exceeds the rest of the payload.
func (r *source) header() (hdr, n int, err error) {
	rest := r.payload[len(r.payload)-r.Len():]
	if len(rest) == 0 {
		return 0, 0, io.ErrUnexpectedEOF
	}
	c := rest[0]
	be := func(k int) int {
		if len(rest) < 1+k {
			return -1
		}
		v := 0
		for _, x := range rest[1 : 1+k] {
			v = v<<8 | int(x)
		}
		return v
	}
	switch {
	case msgpcode.IsFixedString(c):
		hdr, n = 1, int(c&msgpcode.FixedStrMask)
	case c == msgpcode.Str8 || c == msgpcode.Bin8:
		hdr, n = 2, be(1)
	case c == msgpcode.Str16 || c == msgpcode.Bin16:
		hdr, n = 3, be(2)
	case c == msgpcode.Str32 || c == msgpcode.Bin32:
		hdr, n = 5, be(4)
	case c == msgpcode.Ext8:
		hdr, n = 3, be(1)
	case c == msgpcode.Ext16:
		hdr, n = 4, be(2)
	case c == msgpcode.Ext32:
		hdr, n = 6, be(4)
	default:
		return 0, 0, nil
	}
	if n < 0 || n > len(rest)-hdr {
		return 0, 0, fmt.Errorf("value declares %d bytes, %d left", n, max(len(rest)-hdr, 0))
	}
	return hdr, n, nil
}

func isArrayCode(c byte) bool {
	return msgpcode.IsFixedArray(c) || c == msgpcode.Array16 || c == msgpcode.Array32
}

func isMapCode(c byte) bool {
	return msgpcode.IsFixedMap(c) || c == msgpcode.Map16 || c == msgpcode.Map32
}

func isIntCode(c byte) bool {
	return msgpcode.IsFixedNum(c) || (c >= msgpcode.Uint8 && c <= msgpcode.Uint64) || (c >= msgpcode.Int8 && c <= msgpcode.Int64)
}

// decodeKey reads a string (a tag or a map key); it accepts str or bin.
func decodeKey(d *msgpack.Decoder, r *source) (string, error) {
	c, err := d.PeekCode()
	if err != nil {
		return "", err
	}
	if !msgpcode.IsString(c) && !msgpcode.IsBin(c) {
		return "", fmt.Errorf("want a string, got code 0x%02x", c)
	}
	b, err := r.inPlace()
	if err != nil {
		return "", err
	}
	return intern(b), nil
}

// intern returns the field names, tags and media of the protocol as
// constants, so that decoding them allocates nothing; other strings are
// copied.
func intern(b []byte) string {
	switch string(b) {
	case "type":
		return "type"
	case "ts":
		return "ts"
	case "events":
		return "events"
	case "data_parallel_rank":
		return "data_parallel_rank"
	case TagBlockStored:
		return TagBlockStored
	case TagBlockRemoved:
		return TagBlockRemoved
	case TagAllBlocksCleared:
		return TagAllBlocksCleared
	case "block_hashes":
		return "block_hashes"
	case "parent_block_hash":
		return "parent_block_hash"
	case "token_ids":
		return "token_ids"
	case "block_size":
		return "block_size"
	case "lora_id":
		return "lora_id"
	case "medium":
		return "medium"
	case "lora_name":
		return "lora_name"
	case "extra_keys":
		return "extra_keys"
	case "group_idx":
		return "group_idx"
	case "kv_cache_spec_kind":
		return "kv_cache_spec_kind"
	case "kv_cache_spec_sliding_window":
		return "kv_cache_spec_sliding_window"
	case MediumGPU:
		return MediumGPU
	case "CPU":
		return "CPU"
	case "full_attention":
		return "full_attention"
	}
	return string(b)
}

func decodeFloat(d *msgpack.Decoder) (float64, error) {
	c, err := d.PeekCode()
	if err != nil {
		return 0, err
	}
	if c != msgpcode.Float && c != msgpcode.Double && !isIntCode(c) {
		return 0, fmt.Errorf("want a number, got code 0x%02x", c)
	}
	return d.DecodeFloat64()
}

func decodeOptInt64(d *msgpack.Decoder) (*int64, error) {
	c, err := d.PeekCode()
	if err != nil {
		return nil, err
	}
	if c == msgpcode.Nil {
		return nil, d.DecodeNil()
	}
	if !isIntCode(c) {
		return nil, fmt.Errorf("want an integer, got code 0x%02x", c)
	}
	v, err := d.DecodeInt64()
	if err != nil {
		return nil, err
	}
	return &v, nil
}

func decodeOptInt(d *msgpack.Decoder) (*int, error) {
	v, err := decodeOptInt64(d)
	if v == nil || err != nil {
		return nil, err
	}
	if *v < math.MinInt32 || *v > math.MaxInt32 {
		return nil, fmt.Errorf("integer %d out of range", *v)
	}
	i := int(*v)
	return &i, nil
}

func decodeOptString(d *msgpack.Decoder, r *source) (*string, error) {
	c, err := d.PeekCode()
	if err != nil {
		return nil, err
	}
	if c == msgpcode.Nil {
		return nil, d.DecodeNil()
	}
	s, err := decodeKey(d, r)
	if err != nil {
		return nil, err
	}
	return &s, nil
}

func decodeHash(d *msgpack.Decoder, r *source) (BlockHash, error) {
	c, err := d.PeekCode()
	if err != nil {
		return BlockHash{}, err
	}
	switch {
	case msgpcode.IsBin(c) || msgpcode.IsString(c):
		if err := r.checkLen(); err != nil {
			return BlockHash{}, err
		}
		b, err := d.DecodeBytes()
		if err != nil {
			return BlockHash{}, err
		}
		return BytesHash(b), nil
	case c == msgpcode.Int8 || c == msgpcode.Int16 || c == msgpcode.Int32 || c == msgpcode.Int64 || (msgpcode.IsFixedNum(c) && c >= msgpcode.NegFixedNumLow):
		v, err := d.DecodeInt64()
		if err != nil {
			return BlockHash{}, err
		}
		if v >= 0 {
			return IntHash(uint64(v)), nil
		}
		return SignedHash(v), nil
	case isIntCode(c):
		v, err := d.DecodeUint64()
		return IntHash(v), err
	}
	return BlockHash{}, fmt.Errorf("block hash is neither an integer nor bytes (code 0x%02x)", c)
}

func decodeOptHash(d *msgpack.Decoder, r *source) (*BlockHash, error) {
	c, err := d.PeekCode()
	if err != nil {
		return nil, err
	}
	if c == msgpcode.Nil {
		return nil, d.DecodeNil()
	}
	h, err := decodeHash(d, r)
	if err != nil {
		return nil, err
	}
	return &h, nil
}

func decodeHashes(d *msgpack.Decoder, r *source) ([]BlockHash, error) {
	n, err := d.DecodeArrayLen()
	if err != nil {
		return nil, err
	}
	if n < 0 {
		return nil, errors.New("block_hashes is nil")
	}
	hs := make([]BlockHash, 0, min(n, r.Len()))
	for i := 0; i < n; i++ {
		h, err := decodeHash(d, r)
		if err != nil {
			return nil, fmt.Errorf("[%d]: %w", i, err)
		}
		hs = append(hs, h)
	}
	return hs, nil
}

func decodeTokens(d *msgpack.Decoder, r *source) ([]uint32, error) {
	n, err := d.DecodeArrayLen()
	if err != nil {
		return nil, err
	}
	if n < 0 {
		return nil, errors.New("token_ids is nil")
	}
	// Token ids are most of a batch's values: read them straight from the
	// payload rather than one decoder call each.
	rest := r.payload[len(r.payload)-r.Len():]
	ts := make([]uint32, 0, min(n, len(rest)))
	pos := 0
	for i := 0; i < n; i++ {
		if pos >= len(rest) {
			return nil, io.ErrUnexpectedEOF
		}
		c := rest[pos]
		var v uint64
		size := 0
		switch {
		case c <= msgpcode.PosFixedNumHigh:
			v, size = uint64(c), 1
		case c == msgpcode.Uint8:
			size = 2
		case c == msgpcode.Uint16:
			size = 3
		case c == msgpcode.Uint32:
			size = 5
		case c == msgpcode.Uint64 || c == msgpcode.Int64:
			size = 9
		case c == msgpcode.Int8:
			size = 2
		case c == msgpcode.Int16:
			size = 3
		case c == msgpcode.Int32:
			size = 5
		case c >= msgpcode.NegFixedNumLow:
			return nil, fmt.Errorf("[%d]: token id %d out of range", i, int8(c))
		default:
			return nil, fmt.Errorf("[%d]: want an integer, got code 0x%02x", i, c)
		}
		if size > 1 {
			if pos+size > len(rest) {
				return nil, io.ErrUnexpectedEOF
			}
			for _, b := range rest[pos+1 : pos+size] {
				v = v<<8 | uint64(b)
			}
			signed := c >= msgpcode.Int8 && c <= msgpcode.Int64
			if signed && rest[pos+1]&0x80 != 0 {
				return nil, fmt.Errorf("[%d]: negative token id", i)
			}
		}
		if v > math.MaxUint32 {
			return nil, fmt.Errorf("[%d]: token id %d out of range", i, v)
		}
		ts = append(ts, uint32(v))
		pos += size
	}
	if _, err := r.Seek(int64(pos), io.SeekCurrent); err != nil {
		return nil, err
	}
	return ts, nil
}

// skipValue skips one value of any type, refusing nesting deeper than maxDepth.
func skipValue(d *msgpack.Decoder, r *source, depth int) error {
	if depth > maxDepth {
		return errors.New("values nested too deeply")
	}
	c, err := d.PeekCode()
	if err != nil {
		return err
	}
	switch {
	case isArrayCode(c):
		n, err := d.DecodeArrayLen()
		if err != nil {
			return err
		}
		for i := 0; i < n; i++ {
			if err := skipValue(d, r, depth+1); err != nil {
				return err
			}
		}
		return nil
	case isMapCode(c):
		n, err := d.DecodeMapLen()
		if err != nil {
			return err
		}
		for i := 0; i < 2*n; i++ {
			if err := skipValue(d, r, depth+1); err != nil {
				return err
			}
		}
		return nil
	default:
		if err := r.checkLen(); err != nil {
			return err
		}
		return d.Skip()
	}
}
