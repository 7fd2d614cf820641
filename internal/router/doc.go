// Package router is Halyard's OpenAI-compatible gateway: the HTTP server, its
// handlers (/v1/chat/completions, /v1/completions, /v1/models, /health,
// /ready, /metrics, /debug/route), and the request path of DESIGN.md §3 —
// parse, route, schedule, proxy, account — with retries before the first
// byte, SSE pass-through with immediate flushing, and explanations.
//
// Parsing the wire format is package openai, route matching package routing,
// endpoint state package datastore, scheduling package scheduling; this
// package wires them and owns the proxying.
package router
