// Package scheduling is Halyard's scheduler: it builds profiles from their
// configuration through a plugin registry, and runs a scheduling cycle —
// filters, then weighted scorers, then a picker — recording an explanation of
// the decision when asked. The plugins themselves live under plugins/, one
// per package; the interfaces they implement live in framework/.
package scheduling
