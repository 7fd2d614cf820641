// Package simclock provides the clocks that the simulator and the bench run on:
// the real wall clock, and a virtual clock that is a single-threaded
// discrete-event loop, so that hours of simulated traffic run in seconds with
// no sleeping.
//
// Code that must run on both clocks takes a Clock and schedules its future
// work with AfterFunc instead of sleeping or starting timers of its own.
// Nothing here knows about engines or requests.
package simclock
