package prefixindex

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestPortableEncodingAgrees runs the encoding path of big-endian hosts on
// this host and checks that it hashes exactly as hashing in place does.
func TestPortableEncodingAgrees(t *testing.T) {
	if !littleEndian {
		t.Skip("this host already takes the encoding path")
	}
	for _, bs := range []int{1, 15, 16, 17, 100} {
		ids := seq(0xfedcba, 3*bs)
		inPlace := AppendTokenChain(nil, Seed("m"), ids, bs)
		littleEndian = false
		encoded := AppendTokenChain(nil, Seed("m"), ids, bs)
		littleEndian = true
		if diff := cmp.Diff(inPlace, encoded); diff != "" {
			t.Errorf("block size %d: in place vs encoded (-+):\n%s", bs, diff)
		}
	}
}
