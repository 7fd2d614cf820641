package cli

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"

	"github.com/spf13/cobra"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"

	servingv1 "github.com/halyard-dev/halyard/api/v1alpha1"
	"github.com/halyard-dev/halyard/internal/agent"
)

func newAgentCommand() *cobra.Command {
	var (
		kubeconfig, podName, namespace, listen, logFormat, logLevel string
		port                                                        int
	)
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the in-pod group restart agent",
		Long: `Run the in-pod group restart agent (injected by the controller as a
restartable init container). It exits with code 88 when the controller asks
the group to restart, and its /startup probe passes once the group's barrier
is released.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := k8sLogger(cmd.ErrOrStderr(), logFormat, logLevel)
			if err != nil {
				return err
			}
			if podName == "" || namespace == "" {
				return errors.New("the pod's name and namespace are needed: --pod-name/--namespace or POD_NAME/POD_NAMESPACE")
			}
			cfg, err := restConfig(kubeconfig)
			if err != nil {
				return err
			}
			pods, err := corev1client.NewForConfig(cfg)
			if err != nil {
				return fmt.Errorf("pod client: %w", err)
			}
			if listen == "" {
				listen = ":" + strconv.Itoa(port)
			}
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return fmt.Errorf("listen %s: %w", listen, err)
			}
			logger.Info("agent serving", "addr", ln.Addr().String())
			err = agent.New(agent.Options{
				Pods: pods.Pods(namespace), PodName: podName, Listener: ln, Logger: logger,
			}).Run(cmd.Context())
			if errors.Is(err, agent.ErrRestartGroup) {
				return &exitError{code: servingv1.ExitCodeRestartGroup, err: err}
			}
			return err
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig file; default in-cluster config")
	fl.StringVar(&podName, "pod-name", os.Getenv("POD_NAME"), "this pod's name (default $POD_NAME)")
	fl.StringVar(&namespace, "namespace", os.Getenv("POD_NAMESPACE"), "this pod's namespace (default $POD_NAMESPACE)")
	fl.IntVar(&port, "port", servingv1.DefaultAgentPort, "port of /startup, /healthz and /state")
	fl.StringVar(&listen, "listen", "", "listen address; overrides --port (e.g. 127.0.0.1:0)")
	fl.StringVar(&logFormat, "log-format", "json", "log format: json or text")
	fl.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	return cmd
}
