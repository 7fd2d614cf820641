package kvevents_test

import (
	"fmt"

	"github.com/halyard-dev/halyard/internal/kvevents"
)

func ExampleDecodeBatch() {
	gpu := kvevents.MediumGPU
	rank := 0
	in := &kvevents.Batch{
		TS: 1764201600.5,
		Events: []kvevents.Event{
			&kvevents.BlockStored{
				BlockHashes: []kvevents.BlockHash{kvevents.IntHash(1)},
				TokenIDs:    []uint32{1, 2, 3, 4},
				BlockSize:   4,
				Medium:      &gpu,
			},
			&kvevents.AllBlocksCleared{},
		},
		DataParallelRank: &rank,
	}
	payload, err := kvevents.EncodeBatch(nil, in, kvevents.FormatArray)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("% x\n", payload[:10])
	out, err := kvevents.DecodeBatch(payload)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, ev := range out.Events {
		fmt.Println(ev.Tag())
	}
	// Output:
	// 93 cb 41 da 49 e5 20 20 00 00
	// BlockStored
	// AllBlocksCleared
}
