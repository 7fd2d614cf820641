package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"
	"k8s.io/apimachinery/pkg/api/resource"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"

	"github.com/halyard-dev/halyard/internal/weights"
	"github.com/halyard-dev/halyard/internal/weights/podreport"
)

type fetchFlags struct {
	into, revision, tokenFile, cacheMax, progress, logFormat, logLevel string
	include, exclude                                                   []string
	parallel, attempts                                                 int
	verify                                                             bool
	progressInterval                                                   time.Duration

	// Dragonfly.
	dfProxy, dfTag, dfApplication, dfFilteredParams, dfCAFile string
	// Reporting to the controller (the injected init container).
	report                                          bool
	reportInterval                                  time.Duration
	kubeconfig, podName, namespace, podUID, serving string
	terminationPath                                 string
}

func newFetchCommand() *cobra.Command {
	f := &fetchFlags{}
	cmd := &cobra.Command{
		Use:   "fetch SOURCE --into DIR",
		Short: "Download model weights into a local (node) cache",
		Long: `Download a model into DIR and print the local path of the model.

SOURCE is hf://owner/repo[@revision] (the Hugging Face Hub; endpoint from
HF_ENDPOINT, token from HF_TOKEN or --token-file),
modelscope://owner/repo[@revision] (ModelScope; endpoint from
MODELSCOPE_ENDPOINT, token from MODELSCOPE_API_TOKEN or --token-file;
revision default master), http(s)://host/file or
http(s)://host/dir/ (an index page), s3://bucket/prefix (endpoint from
AWS_ENDPOINT_URL, credentials from the AWS chain) or gs://bucket/prefix.

Hugging Face and ModelScope models are laid out as the Hugging Face hub cache
(DIR/models--owner--repo/snapshots/<commit>/...), so an engine loads them
offline with HF_HUB_CACHE=DIR HF_HUB_OFFLINE=1. Files are resumed after an
interruption, verified (size, sha256 of LFS objects) and renamed into place
only when complete. Concurrent fetches of one model into one DIR fetch once
(a file lock), and a done-marker makes a repeated fetch return at once.
See docs/weights.md.`,
		Example: `  halyard fetch hf://Qwen/Qwen3-0.6B --into /var/cache/halyard
  HF_HUB_CACHE=/var/cache/halyard HF_HUB_OFFLINE=1 vllm serve Qwen/Qwen3-0.6B
  halyard fetch hf://meta-llama/Llama-3.1-8B@main --into DIR --include '*.safetensors' --include 'config.json' --include 'tokenizer*' --token-file /secrets/hf
  halyard fetch s3://models/llama/v1/ --into DIR --cache-max-bytes 500Gi`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runFetch(cmd, args[0], f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.into, "into", os.Getenv("HF_HUB_CACHE"), "directory to fetch into (default $HF_HUB_CACHE); the node cache")
	fl.StringArrayVar(&f.include, "include", nil, "only files matching this glob (repeatable; * matches across /)")
	fl.StringArrayVar(&f.exclude, "exclude", nil, "skip files matching this glob (repeatable)")
	fl.StringVar(&f.revision, "revision", "", "hf or modelscope revision (branch, tag or commit); overrides SOURCE's @revision")
	fl.StringVar(&f.tokenFile, "token-file", "", "file holding the bearer token (default $HF_TOKEN; $MODELSCOPE_API_TOKEN for modelscope://)")
	fl.IntVar(&f.parallel, "parallel", 8, "files downloaded at once")
	fl.IntVar(&f.attempts, "attempts", 5, "tries per file, each resuming the last")
	fl.BoolVar(&f.verify, "verify", false, "rehash files already on disk and refetch those that differ")
	fl.StringVar(&f.cacheMax, "cache-max-bytes", "", "after the fetch, evict least recently used models until DIR holds at most this much (e.g. 500Gi)")
	fl.StringVar(&f.progress, "progress", "auto", "progress display: auto (a bar on a terminal, log lines otherwise), bar, log or none")
	fl.DurationVar(&f.progressInterval, "progress-interval", 5*time.Second, "interval of progress log lines")
	fl.StringVar(&f.logFormat, "log-format", "text", "log format: json or text")
	fl.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fl.StringVar(&f.dfProxy, "dragonfly-proxy", "", "the node's Dragonfly dfdaemon proxy (e.g. http://127.0.0.1:4001): hf and http(s) files go through it, falling back to the origin when it fails")
	fl.StringVar(&f.dfTag, "dragonfly-tag", "", "X-Dragonfly-Tag of the downloads (must equal the preheat's)")
	fl.StringVar(&f.dfApplication, "dragonfly-application", "", "X-Dragonfly-Application of the downloads (must equal the preheat's)")
	fl.StringVar(&f.dfCAFile, "dragonfly-ca-file", "", "PEM CA of the certificates the dfdaemon proxy presents for https origins (its proxy.server.caCert), trusted beside the system pool; without it an https file falls back to the origin unless the CA is in the system pool")
	fl.StringVar(&f.dfFilteredParams, "dragonfly-filtered-query-params", "", "X-Dragonfly-Filtered-Query-Params: comma-separated query parameters left out of the task id")
	fl.BoolVar(&f.report, "report", false, "report progress and the outcome as an Event about this pod (--pod-name, --namespace), for the controller")
	fl.DurationVar(&f.reportInterval, "report-interval", 5*time.Second, "interval of --report updates")
	fl.StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig for --report; default in-cluster config")
	fl.StringVar(&f.podName, "pod-name", os.Getenv("POD_NAME"), "this pod's name for --report (default $POD_NAME)")
	fl.StringVar(&f.namespace, "namespace", os.Getenv("POD_NAMESPACE"), "this pod's namespace for --report (default $POD_NAMESPACE)")
	fl.StringVar(&f.podUID, "pod-uid", os.Getenv("POD_UID"), "this pod's UID for --report (default $POD_UID)")
	fl.StringVar(&f.serving, "model-serving", os.Getenv("HALYARD_MODEL_SERVING"), "the pod's ModelServing for --report (default $HALYARD_MODEL_SERVING)")
	fl.StringVar(&f.terminationPath, "termination-message-path", "", "on failure, write \"Reason: message\" here (the kubelet's termination message file)")
	return cmd
}

func runFetch(cmd *cobra.Command, source string, f *fetchFlags) error {
	logger, err := k8sLogger(cmd.ErrOrStderr(), f.logFormat, f.logLevel)
	if err != nil {
		return err
	}
	o, err := f.options(source, logger)
	if err != nil {
		return err
	}
	rep, err := f.reporter(logger)
	if err != nil {
		return err
	}
	stop := showProgress(cmd, f, o.Progress, logger)
	stopReport := reportProgress(cmd.Context(), rep, o.Progress, f.reportInterval, source)
	res, err := weights.Fetch(cmd.Context(), source, o)
	stopReport()
	stop()
	if err != nil {
		reason := weights.FailureReason(err)
		if rep != nil {
			_ = rep.Report(cmd.Context(), podreport.Status{State: podreport.StateFailed, Reason: reason, Message: err.Error(),
				Done: o.Progress.Done(), Total: o.Progress.Total(), Fallbacks: o.Progress.Fallbacks()})
		}
		if f.terminationPath != "" {
			msg := reason + ": " + err.Error()
			if len(msg) > 4000 {
				msg = msg[:4000]
			}
			if werr := os.WriteFile(f.terminationPath, []byte(msg), 0o644); werr != nil {
				logger.Warn("fetch: could not write the termination message", "err", werr)
			}
		}
		return err
	}
	if res.Fallbacks > 0 {
		logger.Warn("fetch: files fetched from the origin because the Dragonfly peer failed", "fallbacks", res.Fallbacks)
	}
	if rep != nil {
		_ = rep.Report(cmd.Context(), podreport.Status{State: podreport.StateDone, Done: res.Bytes, Total: res.Bytes,
			Fallbacks: res.Fallbacks, Message: fmt.Sprintf("%s is at %s (%d files, %d bytes, %d transferred)", source, res.Path, res.Files, res.Bytes, res.Transferred)})
	}
	_, err = fmt.Fprintln(cmd.OutOrStdout(), res.Path)
	return err
}

// reporter builds the pod reporter of --report, or nil.
func (f *fetchFlags) reporter(logger *slog.Logger) (*podreport.Reporter, error) {
	if !f.report {
		return nil, nil
	}
	if f.podName == "" || f.namespace == "" {
		return nil, errors.New("--report needs the pod's name and namespace: --pod-name/--namespace or POD_NAME/POD_NAMESPACE")
	}
	cfg, err := restConfig(f.kubeconfig)
	if err != nil {
		return nil, err
	}
	cs, err := corev1client.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("event client: %w", err)
	}
	return &podreport.Reporter{
		Events: cs.Events(f.namespace), Namespace: f.namespace, Pod: f.podName, UID: f.podUID,
		ModelServing: f.serving, Logger: logger,
	}, nil
}

// reportProgress writes a Fetching report every interval until stopped.
func reportProgress(ctx context.Context, rep *podreport.Reporter, p *weights.Progress, interval time.Duration, source string) (stop func()) {
	if rep == nil {
		return func() {}
	}
	if interval <= 0 {
		interval = 5 * time.Second
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			_ = rep.Report(ctx, podreport.Status{State: podreport.StateFetching, Done: p.Done(), Total: p.Total(),
				Fallbacks: p.Fallbacks(), Message: "fetching " + source})
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return func() {
		close(done)
		<-finished
	}
}

func (f *fetchFlags) options(source string, logger *slog.Logger) (weights.Options, error) {
	if f.into == "" {
		return weights.Options{}, errors.New("--into is required (or set HF_HUB_CACHE)")
	}
	o := weights.Options{
		Into: f.into, Revision: f.revision, Include: f.include, Exclude: f.exclude,
		Token: os.Getenv("HF_TOKEN"), Endpoint: os.Getenv("HF_ENDPOINT"),
		ModelScopeEndpoint: weights.ModelScopeEndpoint(os.Getenv("MODELSCOPE_ENDPOINT"), os.Getenv("MODELSCOPE_DOMAIN")),
		Parallel:           f.parallel, Attempts: f.attempts, Verify: f.verify,
		Progress: &weights.Progress{}, Logger: logger,
	}
	if strings.HasPrefix(source, "modelscope://") {
		o.Token = os.Getenv("MODELSCOPE_API_TOKEN")
	}
	if f.tokenFile != "" {
		b, err := os.ReadFile(f.tokenFile)
		if err != nil {
			return o, fmt.Errorf("--token-file: %w", err)
		}
		o.Token = strings.TrimSpace(string(b))
	}
	if f.dfProxy != "" {
		u, err := url.Parse(f.dfProxy)
		if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			return o, fmt.Errorf("--dragonfly-proxy %q: want http://host:port", f.dfProxy)
		}
		o.Dragonfly = &weights.DragonflyOptions{Proxy: u, Tag: f.dfTag, Application: f.dfApplication, FilteredQueryParams: f.dfFilteredParams}
		if f.dfCAFile != "" {
			pool, err := weights.LoadCAFile(f.dfCAFile)
			if err != nil {
				return o, fmt.Errorf("--dragonfly-ca-file: %w", err)
			}
			o.Dragonfly.RootCAs = pool
		}
	}
	if f.cacheMax != "" {
		q, err := resource.ParseQuantity(f.cacheMax)
		if err != nil || q.Sign() <= 0 {
			return o, fmt.Errorf("--cache-max-bytes %q: want a positive size such as 500Gi", f.cacheMax)
		}
		o.MaxCacheBytes = q.Value()
	}
	return o, nil
}

// showProgress draws a bar on a terminal or logs progress lines, until the
// returned stop is called.
func showProgress(cmd *cobra.Command, f *fetchFlags, p *weights.Progress, logger *slog.Logger) (stop func()) {
	mode := f.progress
	if mode == "auto" {
		mode = "log"
		if fd, ok := cmd.ErrOrStderr().(*os.File); ok && term.IsTerminal(int(fd.Fd())) {
			mode = "bar"
		}
	}
	if mode == "none" {
		return func() {}
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	interval := f.progressInterval
	var bar *progressbar.ProgressBar
	if mode == "bar" {
		interval = 200 * time.Millisecond
		bar = progressbar.DefaultBytes(-1, "fetch")
	}
	go func() {
		defer close(finished)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-done:
				if bar != nil {
					_ = bar.Finish()
				}
				return
			case <-t.C:
			}
			if bar != nil {
				if total := p.Total(); total > 0 {
					bar.ChangeMax64(total)
				}
				_ = bar.Set64(p.Done())
				continue
			}
			logger.Info("fetch: progress", "done_bytes", p.Done(), "total_bytes", p.Total(), "files", p.Files())
		}
	}()
	return func() {
		close(done)
		<-finished
	}
}
