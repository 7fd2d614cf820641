// Package pd decides how one request is served by a disaggregated pool: which
// decode endpoint, which prefill endpoint, and whether the remote prefill can
// be skipped because the decode endpoint already holds most of the prompt
// ("decode-first"). It runs two scheduling profiles, one for each role, and
// prefers a prefill endpoint in the decode endpoint's topology domain.
//
// It holds decisions only: it sends nothing and imports no HTTP. The router
// runs the KV-transfer exchanges (vLLM's NixlConnector, SGLang's bootstrap)
// around a Plan; the bench's virtual-time mode runs the same Planner against
// simulated engines, so that both see the same pairs and the same
// decode-first decisions.
package pd
