// Package dragonfly talks to a Dragonfly cluster for model weights: the
// manager's Open API preheat jobs (POST /oapi/v1/jobs with type "preheat",
// then GET /oapi/v1/jobs/{id} until SUCCESS or FAILURE, with a personal
// access token), so that seed peers hold a model's files before the pods
// that need them start.
//
// The URLs preheated must be the ones the fetch asks for, with the same tag,
// application and filtered query parameters, or Dragonfly computes other
// task IDs and the preheat is wasted; HubURLs builds them as halyard fetch
// does. What does not belong here: the fetch itself (package weights).
package dragonfly
