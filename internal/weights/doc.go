// Package weights downloads model weights onto a node: `halyard fetch`.
//
// Fetch takes a source (hf://owner/repo[@revision], http(s)://, s3://,
// gs://) and a directory. Hugging Face sources are fetched with the Hub's
// documented protocol (revision → commit, the recursive tree listing,
// resolve URLs that redirect large files to LFS storage) and laid out as the
// Hub's own cache (models--owner--repo/blobs, snapshots/<commit>, refs), so
// that vLLM and SGLang load them offline with HF_HUB_CACHE pointing at the
// directory. Other sources are copied file by file under a directory named
// after the source. Every file is written to a ".incomplete" file first,
// resumed with an HTTP range after an interruption, checked (size, and the
// sha256 of LFS objects) and renamed into place only when complete.
//
// The directory may be a node cache shared by several pods: a file lock
// (flock) per model makes concurrent fetches of one model on one node fetch
// once, a done-marker lets a restarted pod skip the network, and Evict
// removes the least recently used models above a size bound.
//
// Dragonfly (dfget through the node's peer, and the manager's preheat job
// API) lives in the subpackage dragonfly. What does not belong here: the
// Kubernetes wiring (internal/controller) and flag parsing (internal/cli).
package weights
