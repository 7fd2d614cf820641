// Package console is the router's web console (DESIGN.md §15): embedded
// static pages (plain HTML, CSS and JavaScript, no build step, no CDN) and
// the JSON and Server-Sent Events APIs they read, served on the router's
// admin listener under /ui/ (docs/console.md).
//
// The router gives the console what it shows through Source (the fleet and
// the routes), a Feed of recent decisions that the router publishes to only
// while someone watches, and the router's own public handler, through which
// the playground sends its requests. The console never decides anything and
// never reaches the router's internals; it does not belong on the public
// listener.
package console
