// Package decision decides where an inference request goes, without any
// transport: the router (internal/router) drives it between parsing a
// request and relaying it, and the bench's virtual fleet
// (internal/bench/virtual) drives it between a request's arrival in
// virtual time and its submission to a simulated engine. What one decides,
// the other decides the same way (DESIGN.md §16).
//
// What belongs here:
//   - candidate selection: which endpoints of a pool may serve, expressed
//     entirely as filter plugins (health, role, LoRA adapter, outlier
//     ejection), each of which names its reason for /debug/route;
//   - profile resolution: the one place that turns a profile name into a
//     built profile (a configured profile, else a preset);
//   - the route's targets in order (the split's pick, then the fallbacks),
//     the retry rule (another endpoint than those tried), and for
//     disaggregated pools the PD planner (package scheduling/pd);
//   - prefix prediction: the prefix-cache scorer's score of the picked
//     endpoint, and the handle through which scorers reach a shared prefix
//     index (prefixcache.SharedIndex, the KV-event tracker's view);
//   - the load accounting hooks: sent, first byte, done, including the
//     in-flight counts the scorers read.
//
// What does not: HTTP, bodies, relaying, timeouts and retries' error
// handling (internal/router); clocks and engines (the virtual fleet keeps
// its clock, the simulator its engines); metrics of the router (it observes
// them from what a Decision reports).
package decision
