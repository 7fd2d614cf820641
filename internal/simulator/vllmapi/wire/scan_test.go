package wire

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/halyard-dev/halyard/internal/fuzzseed"
)

// FuzzScanObject: on what json.Valid accepts (production's check, which
// lets invalid UTF-8 through) the scanner splits objects and arrays exactly
// as encoding/json does, keys with invalid UTF-8 included.
func FuzzScanObject(f *testing.F) {
	for _, seed := range []string{
		`{}`, `{"a":1}`, `{"a" : [1, {"b":"}"}], "c":"x\"y", "d":null, "a":2}`,
		` { "k\u00e9y" : { "n" : [ [], {} ] } , "s" : "a\\" } `, `[1,"2",[3]]`, `"str"`, `7`,
	} {
		f.Add([]byte(seed))
	}
	for _, d := range fuzzseed.JSONDocuments(`{"a":1,"\xff":2,"b":`) {
		f.Add(d)
	}
	f.Add([]byte("{\"k\xff\":1,\"k\ufffd\":2}"))
	f.Add([]byte("{\"\xed\xa0\x80\":[\"\xc0\xaf\"]}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if !json.Valid(data) {
			return
		}
		var want map[string]json.RawMessage
		werr := json.Unmarshal(data, &want)
		got, ok := scanObject(data)
		if (werr == nil && want != nil) != ok {
			t.Fatalf("scanObject ok=%v, encoding/json err=%v map=%v", ok, werr, want)
		}
		if ok {
			if len(got) != len(want) {
				t.Fatalf("%d members, encoding/json %d", len(got), len(want))
			}
			for k, v := range want {
				if !bytes.Equal(got[k], v) {
					t.Fatalf("member %q = %s, encoding/json %s", k, got[k], v)
				}
			}
		}
		var wantArr []json.RawMessage
		aerr := json.Unmarshal(data, &wantArr)
		arr, aok := scanArray(data)
		if (aerr == nil && wantArr != nil) != aok {
			t.Fatalf("scanArray ok=%v, encoding/json err=%v", aok, aerr)
		}
		if aok {
			if len(arr) != len(wantArr) {
				t.Fatalf("%d elements, encoding/json %d", len(arr), len(wantArr))
			}
			for i := range arr {
				if !bytes.Equal(arr[i], wantArr[i]) {
					t.Fatalf("element %d = %s, encoding/json %s", i, arr[i], wantArr[i])
				}
			}
		}
	})
}
