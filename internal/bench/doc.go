// Package bench runs a benchmark: it takes a workload (workload), spaces its
// requests in time (arrival), sends them to an OpenAI-compatible endpoint
// over HTTP with streaming (client), reads the engines' own counters before
// and after (enginestats), and summarises what it measured (stats) into a
// report (report). The virtual-time mode, which drives the real scheduler
// against simulated engines in one process, lives in virtual.
//
// This package is the live HTTP runner and the glue; the pieces live in the
// sub-packages so that each can be tested on its own. It talks to its target
// only over HTTP.
package bench
