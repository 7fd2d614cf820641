// Package testbin builds the halyard binary for tests that run it as a
// subprocess (test/e2e, test/integration/k8s, test/integration/kubelet):
// once per test process, into a temporary directory that Remove deletes.
package testbin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
)

var (
	once sync.Once
	dir  string
	path string
	err  error
)

// Halyard returns the path of this checkout's halyard binary, building it on
// the first call; later calls return the same path, or the same error.
func Halyard() (string, error) {
	once.Do(func() {
		dir, err = os.MkdirTemp("", "halyard-bin-")
		if err != nil {
			return
		}
		path = filepath.Join(dir, "halyard")
		cmd := exec.Command("go", "build", "-o", path, "./cmd/halyard")
		cmd.Dir = moduleRoot()
		if out, berr := cmd.CombinedOutput(); berr != nil {
			err = fmt.Errorf("go build ./cmd/halyard: %w\n%s", berr, out)
		}
	})
	return path, err
}

// Remove deletes the built binary, if any; call it from TestMain after the
// tests ran.
func Remove() {
	if dir != "" {
		_ = os.RemoveAll(dir)
	}
}

// moduleRoot is the checkout this file is in (internal/testbin/../..).
func moduleRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}
