package router

import (
	"errors"
	"net/http"
	"strings"

	"github.com/openai/openai-go/v3"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
)

func asAPIError(err error, target **openai.Error) bool { return errors.As(err, target) }

// decisionHeadersOn turns on the decision headers (off by default), which
// most tests read, unless the config set them.
func decisionHeadersOn(cfg *config.Config) {
	on := true
	if cfg.Router.Debug.Explain == nil {
		cfg.Router.Debug.Explain = &on
	}
	if cfg.Router.Debug.EndpointHeader == nil {
		cfg.Router.Debug.EndpointHeader = &on
	}
}

// publicAndAdmin serves r's admin paths (/metrics, /debug/) from its admin
// handler and the rest from its public one, for tests with one server.
func publicAndAdmin(r *Router) http.Handler {
	pub, admin := r.Handler(), r.AdminHandler()
	return http.HandlerFunc(func(w http.ResponseWriter, hr *http.Request) {
		if strings.HasPrefix(hr.URL.Path, "/metrics") || strings.HasPrefix(hr.URL.Path, "/debug/") {
			admin.ServeHTTP(w, hr)
			return
		}
		pub.ServeHTTP(w, hr)
	})
}
