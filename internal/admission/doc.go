// Package admission decides whether, when and as whom a request is served:
// it authenticates the caller (API keys by their SHA-256, JWTs against a
// JWKS) into a tenant, checks the tenant's model allow-list, reserves the
// tenant's budgets (requests and tokens per minute, concurrency; per tenant
// and per tenant and model, locally or shared through Redis) and settles
// them from the engine's usage, and holds requests in a per-model fair
// queue (virtual token counters weighted per tenant, priority classes,
// bounded length and wait) while every endpoint of the model is saturated.
//
// It sits between routing and scheduling (DESIGN.md §3 step 3) and is
// transport-free, like the scheduler: it never imports net/http, takes its
// clock from simclock and reports decisions as values (Ticket, Rejection)
// that the router turns into HTTP answers and that the virtual bench drives
// in virtual time. What does not belong here: reading HTTP headers and
// writing answers (internal/router), choosing an endpoint (scheduling),
// measuring endpoint load (the router hands it in through Gate).
package admission
