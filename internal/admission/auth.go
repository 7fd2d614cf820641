package admission

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
)

// Authentication errors. The router answers all of them with 401
// invalid_api_key except ErrUnknownTenant (403).
var (
	ErrNoCredentials = errors.New("no API key or token was given")
	ErrInvalidKey    = errors.New("the API key is not valid")
	ErrInvalidToken  = errors.New("the bearer token is not valid")
	ErrUnknownTenant = errors.New("the token names no configured tenant")
)

// keyIndex finds a key's tenant: entries are bucketed by the first 8
// bytes of the key's SHA-256 and the full digests compared in constant
// time.
type keyIndex map[uint64][]keyEntry

type keyEntry struct {
	hash   [sha256.Size]byte
	tenant *Tenant
}

func (idx keyIndex) add(h [sha256.Size]byte, t *Tenant) {
	k := binary.LittleEndian.Uint64(h[:8])
	idx[k] = append(idx[k], keyEntry{hash: h, tenant: t})
}

// keyFile is one tenant's keysFrom source, with what was read last.
type keyFile struct {
	tenant *Tenant
	path   string
	hashes [][sha256.Size]byte
	sig    string // size and modification times last read
}

// Authenticator maps a request's credentials to a tenant. Keys and a JWKS
// file are re-read by Reload (Run calls it every reloadInterval), so a key
// is rotated without a restart.
type Authenticator struct {
	required bool
	tenants  map[string]*Tenant
	static   map[[sha256.Size]byte]*Tenant
	files    []*keyFile
	// pushed are keys handed in by SetKeys (a tenant's Kubernetes
	// Secret), by tenant name, as hashes.
	pushed   map[string][][sha256.Size]byte
	keys     atomic.Pointer[keyIndex]
	jwt      *jwtVerifier
	interval time.Duration
	log      *slog.Logger
	mu       sync.Mutex // serialises Reload
}

// NewAuthenticator builds an authenticator for spec over tenants (by name).
// ctx bounds the JWKS refresh goroutine of a JWKS URL.
func NewAuthenticator(ctx context.Context, spec *config.AuthConfig, tenants map[string]*Tenant, specs []config.TenantSpec, now func() time.Time, log *slog.Logger) (*Authenticator, error) {
	a := &Authenticator{required: spec.APIKeys.RequiredOrDefault(), tenants: tenants, static: map[[sha256.Size]byte]*Tenant{},
		interval: spec.ReloadInterval.Duration, log: log}
	for _, s := range specs {
		t := tenants[s.Name]
		for i, k := range s.APIKeys {
			var h [sha256.Size]byte
			if n, err := hex.Decode(h[:], []byte(strings.ToLower(k.SHA256))); err != nil || n != sha256.Size {
				return nil, fmt.Errorf("tenants %s: apiKeys[%d]: not a hex SHA-256", s.Name, i)
			}
			a.static[h] = t
		}
		if s.KeysFrom != nil && s.KeysFrom.File != "" {
			a.files = append(a.files, &keyFile{tenant: t, path: s.KeysFrom.File})
		}
	}
	if spec.JWT != nil {
		v, err := newJWTVerifier(ctx, spec.JWT, now)
		if err != nil {
			return nil, err
		}
		a.jwt = v
	}
	if err := a.Reload(); err != nil {
		return nil, err
	}
	return a, nil
}

// Run re-reads key files and a JWKS file every reload interval until ctx
// is done. A source that fails to read keeps its previous keys.
func (a *Authenticator) Run(ctx context.Context) {
	t := time.NewTicker(a.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := a.Reload(); err != nil {
				a.log.Warn("reloading credentials", "error", err)
			}
		}
	}
}

// Reload re-reads the key files and a JWKS file when they changed. On an
// error the sources that did read are applied, the others keep their keys.
func (a *Authenticator) Reload() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	var errs []error
	for _, f := range a.files {
		if err := f.read(); err != nil {
			errs = append(errs, err)
		}
	}
	a.index()
	if a.jwt != nil {
		if err := a.jwt.reload(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// SetKeys replaces the keys pushed for tenant (those of its Kubernetes
// Secret): each plain key is hashed at once and only its SHA-256 kept.
// An empty set revokes them. It reports false for an unknown tenant.
func (a *Authenticator) SetKeys(tenant string, plain [][]byte) bool {
	t, ok := a.tenants[tenant]
	if !ok {
		return false
	}
	hashes := make([][sha256.Size]byte, 0, len(plain))
	for _, k := range plain {
		if k = bytes.TrimSpace(k); len(k) > 0 {
			hashes = append(hashes, sha256.Sum256(k))
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.pushed == nil {
		a.pushed = map[string][][sha256.Size]byte{}
	}
	a.pushed[t.Name] = hashes
	a.index()
	return true
}

// index rebuilds the key index from every source; a.mu is held.
func (a *Authenticator) index() {
	idx := make(keyIndex, len(a.static))
	for h, t := range a.static {
		idx.add(h, t)
	}
	for _, f := range a.files {
		for _, h := range f.hashes {
			idx.add(h, f.tenant)
		}
	}
	for name, hs := range a.pushed {
		for _, h := range hs {
			idx.add(h, a.tenants[name])
		}
	}
	a.keys.Store(&idx)
}

// read loads the key hashes of f when its content changed. A directory
// (a mounted Kubernetes Secret) holds one plain key per file; a file holds
// one hex SHA-256 per line, or "key: <plain key>" lines hashed on load.
func (f *keyFile) read() error {
	st, err := os.Stat(f.path)
	if err != nil {
		return fmt.Errorf("keysFrom of tenant %s: %w", f.tenant.Name, err)
	}
	var contents [][]byte
	sig := ""
	if st.IsDir() {
		entries, err := os.ReadDir(f.path)
		if err != nil {
			return fmt.Errorf("keysFrom of tenant %s: %w", f.tenant.Name, err)
		}
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), ".") {
				continue // the Secret volume's ..data links
			}
			b, err := os.ReadFile(filepath.Join(f.path, e.Name()))
			if err != nil {
				continue
			}
			contents = append(contents, append([]byte("key: "), bytes.TrimSpace(b)...))
			sig += e.Name() + ":" + fmt.Sprint(sha256.Sum256(b)) + ";"
		}
	} else {
		b, err := os.ReadFile(f.path)
		if err != nil {
			return fmt.Errorf("keysFrom of tenant %s: %w", f.tenant.Name, err)
		}
		contents = bytes.Split(b, []byte("\n"))
		sig = fmt.Sprint(sha256.Sum256(b))
	}
	if sig == f.sig {
		return nil
	}
	var hashes [][sha256.Size]byte
	for i, line := range contents {
		line = bytes.TrimSpace(line)
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		if plain, ok := bytes.CutPrefix(line, []byte("key:")); ok {
			plain = bytes.TrimSpace(plain)
			if len(plain) > 0 {
				hashes = append(hashes, sha256.Sum256(plain))
			}
			continue
		}
		var h [sha256.Size]byte
		if n, err := hex.Decode(h[:], bytes.ToLower(line)); err != nil || n != sha256.Size {
			return fmt.Errorf("keysFrom of tenant %s: line %d: not a hex SHA-256 nor \"key: ...\"", f.tenant.Name, i+1)
		}
		hashes = append(hashes, h)
	}
	f.hashes, f.sig = hashes, sig
	return nil
}

// Authenticate maps an Authorization header value to a tenant. Without
// credentials the caller is the tenant "anonymous" unless keys are
// required. Keys and tokens are never logged or returned in errors.
func (a *Authenticator) Authenticate(authorization string) (*Tenant, error) {
	cred, ok := bearer(authorization)
	if !ok {
		if a.required {
			return nil, ErrNoCredentials
		}
		return anonymous(a.tenants), nil
	}
	if a.jwt != nil && looksLikeJWT(cred) {
		name, err := a.jwt.verify(cred)
		if err != nil {
			return nil, err
		}
		t, ok := a.tenants[name]
		if !ok {
			return nil, ErrUnknownTenant
		}
		return t, nil
	}
	h := sha256.Sum256([]byte(cred))
	idx := *a.keys.Load()
	// The bucket is found by the digest's first bytes, which an attacker
	// cannot steer without a preimage; whole digests are compared in
	// constant time.
	var found *Tenant
	for _, e := range idx[binary.LittleEndian.Uint64(h[:8])] {
		if subtle.ConstantTimeCompare(e.hash[:], h[:]) == 1 {
			found = e.tenant
		}
	}
	if found == nil {
		return nil, ErrInvalidKey
	}
	return found, nil
}

// bearer returns the credential of "Bearer <cred>".
func bearer(h string) (string, bool) {
	const p = "bearer "
	if len(h) <= len(p) || !strings.EqualFold(h[:len(p)], p) {
		return "", false
	}
	c := strings.TrimSpace(h[len(p):])
	return c, c != ""
}

func looksLikeJWT(s string) bool {
	return strings.Count(s, ".") == 2 && strings.HasPrefix(s, "eyJ")
}

// jwtVerifier checks bearer JWTs: signature against the JWKS (RS256,
// ES256, EdDSA only), issuer, audience, exp (required), nbf, with bounded
// leeway.
type jwtVerifier struct {
	parser *jwt.Parser
	claim  string
	file   string // JWKS file; "" for a URL
	sig    string
	kf     atomic.Pointer[keyfunc.Keyfunc]
}

func newJWTVerifier(ctx context.Context, spec *config.JWTConfig, now func() time.Time) (*jwtVerifier, error) {
	opts := []jwt.ParserOption{
		jwt.WithValidMethods([]string{"RS256", "ES256", "EdDSA"}),
		jwt.WithLeeway(spec.Leeway.Duration),
		jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(now),
	}
	if spec.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(spec.Issuer))
	}
	if spec.Audience != "" {
		opts = append(opts, jwt.WithAudience(spec.Audience))
	}
	v := &jwtVerifier{parser: jwt.NewParser(opts...), claim: spec.TenantClaim}
	if strings.HasPrefix(spec.JWKS, "http://") || strings.HasPrefix(spec.JWKS, "https://") {
		kf, err := keyfunc.NewDefaultOverrideCtx(ctx, []string{spec.JWKS}, keyfunc.Override{
			RefreshInterval: spec.RefreshInterval.Duration,
			HTTPTimeout:     5 * time.Second,
		})
		if err != nil {
			return nil, fmt.Errorf("auth.jwt.jwks: %w", err)
		}
		v.kf.Store(&kf)
		return v, nil
	}
	v.file = spec.JWKS
	return v, nil
}

// reload re-reads a JWKS file when its content changed.
func (v *jwtVerifier) reload() error {
	if v.file == "" {
		return nil
	}
	b, err := os.ReadFile(v.file)
	if err != nil {
		return fmt.Errorf("auth.jwt.jwks: %w", err)
	}
	sig := fmt.Sprint(sha256.Sum256(b))
	if sig == v.sig {
		return nil
	}
	kf, err := keyfunc.NewJWKSetJSON(b)
	if err != nil {
		return fmt.Errorf("auth.jwt.jwks %s: %w", v.file, err)
	}
	v.kf.Store(&kf)
	v.sig = sig
	return nil
}

// verify checks the token and returns its tenant claim.
func (v *jwtVerifier) verify(token string) (string, error) {
	kf := v.kf.Load()
	if kf == nil {
		return "", fmt.Errorf("%w: no JWKS is loaded", ErrInvalidToken)
	}
	claims := jwt.MapClaims{}
	if _, err := v.parser.ParseWithClaims(token, claims, (*kf).Keyfunc); err != nil {
		return "", fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	name, _ := claims[v.claim].(string)
	if name == "" {
		return "", fmt.Errorf("%w: claim %q is missing", ErrInvalidToken, v.claim)
	}
	return name, nil
}
