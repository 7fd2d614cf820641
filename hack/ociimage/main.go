// Command ociimage writes a one-file container image (a static binary as its
// entrypoint) as an image archive that `ctr images import` loads, so the
// kubelet test (hack/kubelet.sh) needs no registry. go-containerregistry
// builds the layer, config and manifest.
package main

import (
	"archive/tar"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func main() {
	out := flag.String("o", "", "archive to write")
	ref := flag.String("ref", "", "image name, e.g. halyard.local/halyard:test")
	bin := flag.String("bin", "", "static binary to put in the image")
	path := flag.String("path", "", "its path in the image; also the entrypoint")
	flag.Parse()
	if err := run(*out, *ref, *bin, *path); err != nil {
		fmt.Fprintln(os.Stderr, "ociimage:", err)
		os.Exit(1)
	}
}

func run(out, ref, bin, path string) error {
	if out == "" || ref == "" || bin == "" || !strings.HasPrefix(path, "/") {
		return fmt.Errorf("-o, -ref, -bin and an absolute -path are required")
	}
	tag, err := name.NewTag(ref)
	if err != nil {
		return fmt.Errorf("image name: %w", err)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		return err
	}
	layerTar, err := oneFileTar(strings.TrimPrefix(path, "/"), data)
	if err != nil {
		return err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	})
	if err != nil {
		return fmt.Errorf("layer: %w", err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", "amd64"
	cfg.Config = v1.Config{Entrypoint: []string{path}, Env: []string{"PATH=/"}, WorkingDir: "/"}
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		return err
	}
	return tarball.WriteToFile(out, tag, img)
}

// oneFileTar is a layer holding one executable file.
func oneFileTar(path string, data []byte) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	hdr := &tar.Header{Name: path, Mode: 0o755, Size: int64(len(data)), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}
	if err := tw.WriteHeader(hdr); err != nil {
		return nil, err
	}
	if _, err := tw.Write(data); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
