// Package kvevents speaks vLLM's KV-cache event protocol: a ZeroMQ PUB socket
// that sends multipart frames [topic, seq, payload], where seq is an 8-byte
// big-endian sequence number and payload a msgpack EventBatch of BlockStored,
// BlockRemoved and AllBlocksCleared events, plus a ROUTER "replay" socket that
// re-sends recent batches from a given sequence number.
//
// It holds both sides: Publisher, which the simulator uses to publish its
// block pool's changes exactly as vLLM does, and Subscriber, which the router
// uses to follow an engine's cache, detect sequence gaps and publisher
// restarts, resync through the replay socket, and hand decoded events to a
// Consumer. Rehasher is a Consumer that turns the engine's block hashes into
// Halyard's own chain hashes (DESIGN.md §5), keeping the engine-hash mapping
// that BlockRemoved needs, and feeds an Index.
//
// The codec (EncodeBatch, DecodeBatch) accepts both encodings vLLM has used:
// events as positional tagged arrays (array_like structs, vLLM before PR
// #42892) and events as maps with a "type" key (vLLM after it); docs/kv-events.md
// records the wire format and its sources.
//
// What does not belong here: the prefix index and the scorer that reads it
// (internal/prefixindex, scheduling plugins) and the simulator's block pool.
package kvevents
