// Package presets holds the built-in scheduling profiles ("default",
// "default-v1" and "default-v2", the baselines, "prefill" and "decode") as config.ProfileSpec values whose
// plugin parameters are the plugins' own typed Params, encoded here, not
// JSON written by hand. It belongs to wiring code (the CLI, local mode, the
// virtual bench); the scheduler builds whatever profile it is given and
// knows no preset. Which name means which profile (the config's own
// profiles winning over presets) is decided in one place, package decision.
package presets
