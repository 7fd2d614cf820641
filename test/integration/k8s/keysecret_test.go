package k8s

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
	"github.com/halyard-dev/halyard/internal/admission"
	"github.com/halyard-dev/halyard/internal/admission/secretkeys"
)

// lockedBuffer is a log sink safe for the informer's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// A tenant's API keys come from a Kubernetes Secret followed through an
// informer: a key added to the Secret is accepted, a key rotated out is
// refused, a deleted Secret revokes its keys, all without a restart; the
// keys never appear in the logs.
func TestTenantKeysFollowTheirSecret(t *testing.T) {
	k, _ := sharedCluster(t)
	ns := k.namespace(t, "tenant-keys")
	cs, err := kubernetes.NewForConfig(k.cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const first, second = "sk-first-0f3a9c", "sk-second-7b21d4"
	secrets := cs.CoreV1().Secrets(ns)
	if _, err := secrets.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "team-a-keys"},
		Data: map[string][]byte{"ci": []byte(first + "\n")}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Another Secret of the namespace is not a key of anyone.
	if _, err := secrets.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "other"},
		Data: map[string][]byte{"x": []byte("sk-not-a-key")}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse([]byte(`apiVersion: config.halyard.dev/v1alpha1
kind: Config
auth: {}
tenants:
  - name: team-a
    keysFrom: {secret: {namespace: ` + ns + `, name: team-a-keys}}
`))
	if err != nil {
		t.Fatal(err)
	}
	var logs lockedBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	a, stop := followTenantKeys(t, ctx, cs, cfg, log)
	defer stop()
	accepts := func(key string) (bool, string) {
		tn, rej := a.Authenticate("Bearer " + key)
		if rej != nil {
			return false, rej.Message
		}
		return tn.Name == "team-a", tn.Name
	}
	refuses := func(key string) func() (bool, string) {
		return func() (bool, string) { ok, s := accepts(key); return !ok, s }
	}
	eventually(t, waitLong, "the Secret's key accepted", func() (bool, string) { return accepts(first) })
	if ok, _ := accepts("sk-not-a-key"); ok {
		t.Error("a key of another Secret was accepted")
	}

	// Rotation: the Secret now holds the second key only.
	sec, err := secrets.Get(ctx, "team-a-keys", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sec.Data = map[string][]byte{"ci": []byte(second)}
	if _, err := secrets.Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, waitLong, "the rotated key accepted", func() (bool, string) { return accepts(second) })
	eventually(t, waitLong, "the old key refused", refuses(first))

	if err := secrets.Delete(ctx, "team-a-keys", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, waitLong, "the deleted Secret's key refused", refuses(second))

	out := logs.String()
	for _, key := range []string{first, second, "sk-not-a-key"} {
		if strings.Contains(out, key) {
			t.Errorf("a key appears in the logs:\n%s", out)
		}
	}
	if !strings.Contains(out, "tenant keys from secret") {
		t.Errorf("no log of the Secret's changes:\n%s", out)
	}
}

// followTenantKeys is admission for cfg with its tenants' keysFrom.secret
// followed through client (the router's secretkeys.Follower); stop ends
// the follower, reports its error and closes the admission.
func followTenantKeys(t *testing.T, ctx context.Context, client kubernetes.Interface, cfg *config.Config, log *slog.Logger) (*admission.Admission, func()) {
	t.Helper()
	a, err := admission.New(admission.Options{Config: cfg, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(ctx)
	f := &secretkeys.Follower{Client: client, Secrets: admission.KeySecrets(cfg), Log: log}
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx, a.SetTenantKeys) }()
	return a, func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("follower: %v", err)
		}
		a.Close()
	}
}
