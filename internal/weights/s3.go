package weights

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// An s3 source is every object under bucket/prefix, listed with
// ListObjectsV2 and read with GET (SigV4-signed by minio-go), from the
// endpoint in AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL (an S3-compatible
// store) or AWS's own. Credentials come from the usual chain: the
// AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY environment, the shared
// credentials file, then the instance's IAM role (IRSA web identity or the
// metadata service).
func planS3(ctx context.Context, src Source, opts Options) (*plan, error) {
	client, err := s3Client()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(opts.Into, src.CacheKey())
	p := &plan{path: dir}
	match := newMatcher(opts.Include, opts.Exclude)
	prefix := src.Prefix
	for obj := range client.ListObjects(ctx, src.Bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if obj.Err != nil {
			return nil, fmt.Errorf("list s3://%s/%s: %w", src.Bucket, prefix, s3Error(obj.Err))
		}
		if strings.HasSuffix(obj.Key, "/") {
			continue
		}
		rel := strings.TrimPrefix(strings.TrimPrefix(obj.Key, prefix), "/")
		if rel == "" {
			rel = filepath.Base(obj.Key)
		}
		if !match.match(rel) {
			continue
		}
		dest, err := within(dir, rel)
		if err != nil {
			return nil, err
		}
		p.files++
		p.bytes += obj.Size
		if st, err := os.Stat(dest); err == nil && st.Size() == obj.Size && !opts.Verify {
			p.present += obj.Size
			continue
		}
		key := obj.Key
		core := minio.Core{Client: client}
		p.tasks = append(p.tasks, fileTask{Name: rel, Dest: dest, Size: obj.Size,
			Open: func(ctx context.Context, offset int64) (io.ReadCloser, bool, error) {
				var o minio.GetObjectOptions
				if offset > 0 {
					if err := o.SetRange(offset, 0); err != nil {
						return nil, false, err
					}
				}
				body, _, _, err := core.GetObject(ctx, src.Bucket, key, o)
				if err != nil {
					return nil, false, s3Error(err)
				}
				return body, offset > 0, nil
			}})
	}
	if p.files == 0 {
		return nil, fmt.Errorf("no object under %s matches (or the prefix is empty)", src)
	}
	return p, nil
}

func s3Client() (*minio.Client, error) {
	endpoint := os.Getenv("AWS_ENDPOINT_URL_S3")
	if endpoint == "" {
		endpoint = os.Getenv("AWS_ENDPOINT_URL")
	}
	secure, host, lookup := true, "s3.amazonaws.com", minio.BucketLookupAuto
	if endpoint != "" {
		u, err := url.Parse(endpoint)
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("AWS_ENDPOINT_URL %q: not a URL", endpoint)
		}
		secure, host, lookup = u.Scheme == "https", u.Host, minio.BucketLookupPath
	}
	region := os.Getenv("AWS_REGION")
	if region == "" {
		region = os.Getenv("AWS_DEFAULT_REGION")
	}
	if region == "" {
		region = "us-east-1"
	}
	creds := credentials.NewChainCredentials([]credentials.Provider{
		&credentials.EnvAWS{},
		&credentials.FileAWSCredentials{},
		&credentials.IAM{},
	})
	c, err := minio.New(host, &minio.Options{Creds: creds, Secure: secure, Region: region, BucketLookup: lookup})
	if err != nil {
		return nil, fmt.Errorf("s3 client: %w", err)
	}
	return c, nil
}

// s3Error maps S3's error codes onto the package's sentinels.
func s3Error(err error) error {
	resp := minio.ToErrorResponse(err)
	switch resp.StatusCode {
	case 401:
		return fmt.Errorf("%w: %s", ErrUnauthorized, resp.Code)
	case 403:
		return fmt.Errorf("%w: %s", ErrForbidden, resp.Code)
	case 404:
		return fmt.Errorf("%w: %s", ErrNotFound, resp.Code)
	}
	if resp.StatusCode >= 500 {
		return &HTTPStatusError{Code: resp.StatusCode, URL: resp.BucketName + "/" + resp.Key}
	}
	return err
}
