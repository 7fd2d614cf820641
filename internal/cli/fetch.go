package cli

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/halyard-dev/halyard/internal/weights"
)

type fetchFlags struct {
	into, revision, tokenFile, cacheMax, progress, logFormat, logLevel string
	include, exclude                                                   []string
	parallel, attempts                                                 int
	verify                                                             bool
	progressInterval                                                   time.Duration
}

func newFetchCommand() *cobra.Command {
	f := &fetchFlags{}
	cmd := &cobra.Command{
		Use:   "fetch SOURCE --into DIR",
		Short: "Download model weights into a local (node) cache",
		Long: `Download a model into DIR and print the local path of the model.

SOURCE is hf://owner/repo[@revision] (the Hugging Face Hub; endpoint from
HF_ENDPOINT, token from HF_TOKEN or --token-file), http(s)://host/file or
http(s)://host/dir/ (an index page), s3://bucket/prefix (endpoint from
AWS_ENDPOINT_URL, credentials from the AWS chain) or gs://bucket/prefix.

Hugging Face models are laid out as the hub cache
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
	fl.StringVar(&f.revision, "revision", "", "hf revision (branch, tag or commit); overrides SOURCE's @revision")
	fl.StringVar(&f.tokenFile, "token-file", "", "file holding the bearer token (default $HF_TOKEN)")
	fl.IntVar(&f.parallel, "parallel", 8, "files downloaded at once")
	fl.IntVar(&f.attempts, "attempts", 5, "tries per file, each resuming the last")
	fl.BoolVar(&f.verify, "verify", false, "rehash files already on disk and refetch those that differ")
	fl.StringVar(&f.cacheMax, "cache-max-bytes", "", "after the fetch, evict least recently used models until DIR holds at most this much (e.g. 500Gi)")
	fl.StringVar(&f.progress, "progress", "auto", "progress display: auto (a bar on a terminal, log lines otherwise), bar, log or none")
	fl.DurationVar(&f.progressInterval, "progress-interval", 5*time.Second, "interval of progress log lines")
	fl.StringVar(&f.logFormat, "log-format", "text", "log format: json or text")
	fl.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	return cmd
}

func runFetch(cmd *cobra.Command, source string, f *fetchFlags) error {
	logger, err := k8sLogger(cmd.ErrOrStderr(), f.logFormat, f.logLevel)
	if err != nil {
		return err
	}
	o, err := f.options(logger)
	if err != nil {
		return err
	}
	stop := showProgress(cmd, f, o.Progress, logger)
	res, err := weights.Fetch(cmd.Context(), source, o)
	stop()
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(cmd.OutOrStdout(), res.Path)
	return err
}

func (f *fetchFlags) options(logger *slog.Logger) (weights.Options, error) {
	if f.into == "" {
		return weights.Options{}, errors.New("--into is required (or set HF_HUB_CACHE)")
	}
	o := weights.Options{
		Into: f.into, Revision: f.revision, Include: f.include, Exclude: f.exclude,
		Token: os.Getenv("HF_TOKEN"), Endpoint: os.Getenv("HF_ENDPOINT"),
		Parallel: f.parallel, Attempts: f.attempts, Verify: f.verify,
		Progress: &weights.Progress{}, Logger: logger,
	}
	if f.tokenFile != "" {
		b, err := os.ReadFile(f.tokenFile)
		if err != nil {
			return o, fmt.Errorf("--token-file: %w", err)
		}
		o.Token = strings.TrimSpace(string(b))
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
