// Package archtest holds no code, only a test that checks the import
// boundaries of DESIGN.md §2: the scheduling framework imports nothing else
// from internal/, plugins import only the framework and leaf packages, the
// simulator never imports the router or the scheduler, and bench reaches the
// scheduler only from its virtual-time mode; the decision package
// (DESIGN.md §16) is transport-free and the virtual fleet reaches the
// decision through it, never through the router.
package archtest
