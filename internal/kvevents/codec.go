package kvevents

import (
	"bytes"
	"errors"
	"fmt"
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
	buf := bytes.NewBuffer(dst)
	enc := msgpack.NewEncoder(buf)
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
	for i, ev := range b.Events {
		if err := encodeEvent(enc, ev, f); err != nil {
			return dst, fmt.Errorf("events[%d]: %w", i, err)
		}
	}
	if b.DataParallelRank != nil {
		if err := enc.EncodeInt(int64(*b.DataParallelRank)); err != nil {
			return dst, err
		}
	}
	return buf.Bytes(), nil
}

// field is one named field of an event, written in declaration order.
type field struct {
	name string
	// optional fields have a default (None) in vLLM and are omitted when nil;
	// required fields are always written, as nil when absent.
	optional bool
	isNil    bool
	write    func(*msgpack.Encoder) error
}

func encodeEvent(enc *msgpack.Encoder, ev Event, f Format) error {
	var fields []field
	switch e := ev.(type) {
	case *BlockStored:
		fields = []field{
			{name: "block_hashes", write: hashesWriter(e.BlockHashes)},
			{name: "parent_block_hash", isNil: e.ParentBlockHash == nil, write: func(enc *msgpack.Encoder) error { return encodeHash(enc, *e.ParentBlockHash) }},
			{name: "token_ids", write: func(enc *msgpack.Encoder) error {
				if err := enc.EncodeArrayLen(len(e.TokenIDs)); err != nil {
					return err
				}
				for _, t := range e.TokenIDs {
					if err := enc.EncodeUint(uint64(t)); err != nil {
						return err
					}
				}
				return nil
			}},
			{name: "block_size", write: func(enc *msgpack.Encoder) error { return enc.EncodeInt(int64(e.BlockSize)) }},
			intField("lora_id", e.LoRAID, false),
			stringField("medium", e.Medium, false),
			stringField("lora_name", e.LoRAName, false),
			{name: "extra_keys", optional: true, isNil: true},
			intField("group_idx", e.GroupIdx, true),
			stringField("kv_cache_spec_kind", e.KVCacheSpecKind, true),
			intField("kv_cache_spec_sliding_window", e.KVCacheSpecSlidingWindow, true),
		}
	case *BlockRemoved:
		fields = []field{
			{name: "block_hashes", write: hashesWriter(e.BlockHashes)},
			stringField("medium", e.Medium, false),
			intField("group_idx", e.GroupIdx, true),
		}
	case *AllBlocksCleared:
	default:
		return fmt.Errorf("cannot encode event of type %T", ev)
	}

	// omit_defaults drops optional fields that are nil: in a map any of
	// them, in an array only a trailing run (positions must hold).
	switch f {
	case FormatMap:
		kept := fields[:0:0]
		for _, fl := range fields {
			if !fl.optional || !fl.isNil {
				kept = append(kept, fl)
			}
		}
		if err := errors.Join(enc.EncodeMapLen(len(kept)+1), enc.EncodeString("type"), enc.EncodeString(ev.Tag())); err != nil {
			return err
		}
		for _, fl := range kept {
			if err := enc.EncodeString(fl.name); err != nil {
				return err
			}
			if err := writeField(enc, fl); err != nil {
				return fmt.Errorf("%s: %w", fl.name, err)
			}
		}
	case FormatArray:
		n := len(fields)
		for n > 0 && fields[n-1].optional && fields[n-1].isNil {
			n--
		}
		if err := errors.Join(enc.EncodeArrayLen(n+1), enc.EncodeString(ev.Tag())); err != nil {
			return err
		}
		for _, fl := range fields[:n] {
			if err := writeField(enc, fl); err != nil {
				return fmt.Errorf("%s: %w", fl.name, err)
			}
		}
	default:
		return fmt.Errorf("unknown format %v", f)
	}
	return nil
}

func writeField(enc *msgpack.Encoder, fl field) error {
	if fl.isNil || fl.write == nil {
		return enc.EncodeNil()
	}
	return fl.write(enc)
}

func hashesWriter(hs []BlockHash) func(*msgpack.Encoder) error {
	return func(enc *msgpack.Encoder) error {
		if err := enc.EncodeArrayLen(len(hs)); err != nil {
			return err
		}
		for _, h := range hs {
			if err := encodeHash(enc, h); err != nil {
				return err
			}
		}
		return nil
	}
}

func intField(name string, v *int64, optional bool) field {
	return field{name: name, optional: optional, isNil: v == nil, write: func(enc *msgpack.Encoder) error { return enc.EncodeInt(*v) }}
}

func stringField(name string, v *string, optional bool) field {
	return field{name: name, optional: optional, isNil: v == nil, write: func(enc *msgpack.Encoder) error { return enc.EncodeString(*v) }}
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
	d := msgpack.NewDecoder(&r.Reader)
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

// checkLen refuses a string, binary or extension value whose declared length
// exceeds what is left of the payload: a 6-byte header must not make the
// decoder allocate gigabytes.
func (r *source) checkLen() error {
	rest := r.payload[len(r.payload)-r.Len():]
	if len(rest) == 0 {
		return nil
	}
	c := rest[0]
	var hdr, n int
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
		return nil
	}
	if n < 0 || n > len(rest)-hdr {
		return fmt.Errorf("value declares %d bytes, %d left", n, max(len(rest)-hdr, 0))
	}
	return nil
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
	if err := r.checkLen(); err != nil {
		return "", err
	}
	return d.DecodeString()
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
	ts := make([]uint32, 0, min(n, r.Len()))
	for i := 0; i < n; i++ {
		c, err := d.PeekCode()
		if err != nil {
			return nil, err
		}
		if !isIntCode(c) {
			return nil, fmt.Errorf("[%d]: want an integer, got code 0x%02x", i, c)
		}
		v, err := d.DecodeInt64()
		if err != nil {
			return nil, err
		}
		if v < 0 || v > math.MaxUint32 {
			return nil, fmt.Errorf("[%d]: token id %d out of range", i, v)
		}
		ts = append(ts, uint32(v))
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
