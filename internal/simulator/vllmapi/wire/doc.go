// Package wire parses and validates the simulator's OpenAI-compatible
// generation requests (completions and chat) and builds vLLM-shaped error
// bodies. It is kept apart from the HTTP server so that its fuzz target
// builds quickly and so that the chat rendering is importable on its own.
//
// Not here: serving, streaming, metrics (package vllmapi), the engine model
// (package simulator).
package wire
