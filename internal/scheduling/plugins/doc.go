// Package plugins registers Halyard's built-in scheduling plugins. Each
// plugin lives in its own package below, grouped by kind (filter/, scorer/,
// picker/); this package only knows their types and factories. Wiring code
// calls RegisterAll explicitly on the registry it builds profiles with;
// nothing registers itself in init().
package plugins
