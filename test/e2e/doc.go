// Package e2e holds end-to-end tests that build the halyard binary and run
// it as users do — `halyard router` in front of `halyard sim` processes, and
// `halyard up` — driving them with the official OpenAI Go SDK over real
// sockets. They are skipped with -short.
package e2e
