package hubtest

import (
	"bytes"
	"encoding/xml"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// S3 is an S3-compatible stand-in: ListObjectsV2 (GET /bucket?list-type=2)
// and GetObject (GET /bucket/key, with ranges), path-style, requiring a
// SigV4 Authorization header naming AccessKey (the signature itself is not
// checked).
type S3 struct {
	URL       string
	AccessKey string
	// MaxKeys is the page size of listings.
	MaxKeys int

	srv       *httptest.Server
	mu        sync.Mutex
	objects   map[string]map[string][]byte
	cutAfter  map[string]int64
	bodyBytes atomic.Int64
}

// NewS3 starts an S3 stand-in accepting accessKey.
func NewS3(accessKey string) *S3 {
	s := &S3{AccessKey: accessKey, MaxKeys: 1000, objects: map[string]map[string][]byte{}, cutAfter: map[string]int64{}}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	s.URL = s.srv.URL
	return s
}

// Close stops the server.
func (s *S3) Close() { s.srv.Close() }

// Put stores an object.
func (s *S3) Put(bucket, key string, b []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.objects[bucket] == nil {
		s.objects[bucket] = map[string][]byte{}
	}
	s.objects[bucket][key] = b
}

// CutAfter drops the next GET of key after n body bytes.
func (s *S3) CutAfter(key string, n int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cutAfter[key] = n
}

// BodyBytes returns the object bytes served.
func (s *S3) BodyBytes() int64 { return s.bodyBytes.Load() }

type s3Error struct {
	XMLName xml.Name `xml:"Error"`
	Code    string
	Message string
}

func (s *S3) fail(w http.ResponseWriter, code int, c, msg string) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(code)
	_ = xml.NewEncoder(w).Encode(s3Error{Code: c, Message: msg})
}

func (s *S3) serve(w http.ResponseWriter, r *http.Request) {
	auth := r.Header.Get("Authorization")
	if !strings.HasPrefix(auth, "AWS4-HMAC-SHA256 Credential="+s.AccessKey+"/") {
		s.fail(w, http.StatusForbidden, "InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records.")
		return
	}
	bucket, key, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	s.mu.Lock()
	objs, ok := s.objects[bucket]
	s.mu.Unlock()
	if !ok {
		s.fail(w, http.StatusNotFound, "NoSuchBucket", "The specified bucket does not exist")
		return
	}
	if r.Method == http.MethodGet && key == "" && r.URL.Query().Get("list-type") == "2" {
		s.list(w, r, bucket, objs)
		return
	}
	if key == "" {
		// Bucket location and the like: us-east-1.
		w.Header().Set("Content-Type", "application/xml")
		_, _ = w.Write([]byte(`<?xml version="1.0" encoding="UTF-8"?><LocationConstraint xmlns="http://s3.amazonaws.com/doc/2006-03-01/"></LocationConstraint>`))
		return
	}
	s.mu.Lock()
	b, ok := objs[key]
	cut, hasCut := s.cutAfter[key]
	delete(s.cutAfter, key)
	s.mu.Unlock()
	if !ok {
		s.fail(w, http.StatusNotFound, "NoSuchKey", "The specified key does not exist.")
		return
	}
	w.Header().Set("ETag", `"`+SHA256(b)[:32]+`"`)
	cw := &countingWriter{ResponseWriter: w, n: &s.bodyBytes, limit: -1}
	if hasCut {
		cw.limit = cut
	}
	http.ServeContent(cw, r, "", time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), bytes.NewReader(b))
	if cw.cut {
		panic(http.ErrAbortHandler)
	}
}

type listResult struct {
	XMLName               xml.Name `xml:"http://s3.amazonaws.com/doc/2006-03-01/ ListBucketResult"`
	Name                  string
	Prefix                string
	KeyCount              int
	MaxKeys               int
	IsTruncated           bool
	ContinuationToken     string `xml:",omitempty"`
	NextContinuationToken string `xml:",omitempty"`
	Contents              []listObject
}

type listObject struct {
	Key          string
	LastModified string
	ETag         string
	Size         int64
	StorageClass string
}

func (s *S3) list(w http.ResponseWriter, r *http.Request, bucket string, objs map[string][]byte) {
	q := r.URL.Query()
	prefix := q.Get("prefix")
	start, _ := strconv.Atoi(q.Get("continuation-token"))
	var keys []string
	s.mu.Lock()
	for _, k := range sortedKeys(objs) {
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	s.mu.Unlock()
	res := listResult{Name: bucket, Prefix: prefix, MaxKeys: s.MaxKeys, ContinuationToken: q.Get("continuation-token")}
	start = min(start, len(keys))
	end := min(start+s.MaxKeys, len(keys))
	for _, k := range keys[start:end] {
		res.Contents = append(res.Contents, listObject{Key: k, LastModified: "2026-01-01T00:00:00.000Z",
			ETag: `"` + SHA256(objs[k])[:32] + `"`, Size: int64(len(objs[k])), StorageClass: "STANDARD"})
	}
	res.KeyCount = len(res.Contents)
	if end < len(keys) {
		res.IsTruncated = true
		res.NextContinuationToken = strconv.Itoa(end)
	}
	w.Header().Set("Content-Type", "application/xml")
	_, _ = w.Write([]byte(xml.Header))
	_ = xml.NewEncoder(w).Encode(res)
}
