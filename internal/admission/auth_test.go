package admission

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/halyard-dev/halyard/internal/admission/jwttest"
	"github.com/halyard-dev/halyard/internal/simclock"
)

func sha(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func TestAPIKeysAndRotation(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "keys")
	secretDir := filepath.Join(dir, "secret")
	if err := os.WriteFile(keyFile, []byte("# team b\n"+sha("b-old")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(secretDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(secretDir, "key1"), []byte("c-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a := newTestAdmission(t, `
auth: {}
tenants:
  - name: a
    apiKeys: [{sha256: "`+sha("a-key")+`"}]
  - name: b
    keysFrom: {file: `+keyFile+`}
  - name: c
    keysFrom: {file: `+secretDir+`}
`, nil, nil)
	check := func(header, want string, wantErr error) {
		t.Helper()
		tn, rej := a.Authenticate(header)
		switch {
		case wantErr != nil:
			if rej == nil || !errors.Is(rej.Err, wantErr) || rej.Status() != 401 {
				t.Errorf("%q: got %v, want %v (401)", header, rej, wantErr)
			}
			if rej != nil && strings.Contains(rej.Message, strings.TrimPrefix(header, "Bearer ")) && header != "" {
				t.Errorf("the error message repeats the credential: %q", rej.Message)
			}
		case rej != nil:
			t.Errorf("%q: refused: %s", header, rej.Message)
		case tn.Name != want:
			t.Errorf("%q: tenant %s, want %s", header, tn.Name, want)
		}
	}
	check("Bearer a-key", "a", nil)
	check("bearer a-key", "a", nil)
	check("Bearer b-old", "b", nil)
	check("Bearer c-secret", "c", nil)
	check("Bearer wrong", "", ErrInvalidKey)
	check("", "", ErrNoCredentials)
	check("Basic YTpi", "", ErrNoCredentials)

	// Rotation: the file gets a new key and loses the old one.
	if err := os.WriteFile(keyFile, []byte("key: b-new\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := a.auth.Reload(); err != nil {
		t.Fatal(err)
	}
	check("Bearer b-new", "b", nil)
	check("Bearer b-old", "", ErrInvalidKey)

	// A broken file keeps the keys it had.
	if err := os.WriteFile(keyFile, []byte("not-hex\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := a.auth.Reload(); err == nil {
		t.Error("a malformed key file reloaded without error")
	}
	check("Bearer b-new", "b", nil)
}

func TestAnonymousWhenKeysAreOptional(t *testing.T) {
	a := newTestAdmission(t, `
auth: {apiKeys: {required: false}}
tenants:
  - {name: anonymous, models: [small]}
`, nil, nil)
	tn, rej := a.Authenticate("")
	if rej != nil || tn.Name != "anonymous" {
		t.Fatalf("got %v %v; want the anonymous tenant", tn, rej)
	}
	if rej := a.Authorize(tn, "big"); rej == nil || rej.Status() != 403 {
		t.Errorf("anonymous calling a model off its list: %v; want 403", rej)
	}
	if _, rej := a.Authenticate("Bearer nope"); rej == nil || rej.Status() != 401 {
		t.Errorf("a wrong key with keys optional: %v; want 401", rej)
	}
}

func TestJWT(t *testing.T) {
	keys := jwttest.NewKeys(t)
	other := jwttest.NewKeys(t)
	dir := t.TempDir()
	jwks := filepath.Join(dir, "jwks.json")
	if err := os.WriteFile(jwks, jwttest.JWKS(t, keys...), 0o600); err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	clock := simclock.NewVirtual(now)
	a := newTestAdmission(t, `
auth:
  jwt: {jwks: `+jwks+`, issuer: https://issuer.test, audience: halyard, tenantClaim: team, leeway: 30s}
tenants:
  - {name: team-a}
`, nil, clock)
	base := func() jwt.MapClaims {
		return jwt.MapClaims{"iss": "https://issuer.test", "aud": "halyard", "team": "team-a",
			"exp": now.Add(time.Hour).Unix(), "nbf": now.Add(-time.Minute).Unix()}
	}
	with := func(k string, v any) jwt.MapClaims {
		c := base()
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	for _, k := range keys {
		t.Run(k.Alg, func(t *testing.T) {
			tn, rej := a.Authenticate("Bearer " + k.Sign(t, base()))
			if rej != nil || tn.Name != "team-a" {
				t.Fatalf("a valid %s token: %v", k.Alg, rej)
			}
		})
	}
	bad := []struct {
		name   string
		token  string
		status int
	}{
		{"expired", keys[0].Sign(t, with("exp", now.Add(-time.Minute).Unix())), 401},
		{"expired within leeway passes", "", 0},
		{"not yet valid", keys[1].Sign(t, with("nbf", now.Add(time.Minute).Unix())), 401},
		{"no exp", keys[2].Sign(t, with("exp", nil)), 401},
		{"wrong audience", keys[0].Sign(t, with("aud", "someone-else")), 401},
		{"wrong issuer", keys[0].Sign(t, with("iss", "https://evil.test")), 401},
		{"unknown signing key", other[0].Sign(t, base()), 401},
		{"no tenant claim", keys[0].Sign(t, with("team", nil)), 401},
		{"unknown tenant", keys[0].Sign(t, with("team", "team-z")), 403},
		{"alg none", noneToken(t, base()), 401},
		{"HS256 with the public key as secret", hsToken(t, base()), 401},
	}
	for _, c := range bad {
		if c.token == "" {
			continue
		}
		t.Run(c.name, func(t *testing.T) {
			_, rej := a.Authenticate("Bearer " + c.token)
			if rej == nil || rej.Status() != c.status {
				t.Fatalf("got %v; want %d", rej, c.status)
			}
			if strings.Contains(rej.Message, c.token) {
				t.Error("the message repeats the token")
			}
		})
	}
	t.Run("expired within leeway passes", func(t *testing.T) {
		tok := keys[0].Sign(t, with("exp", now.Add(-10*time.Second).Unix()))
		if _, rej := a.Authenticate("Bearer " + tok); rej != nil {
			t.Fatalf("expired 10s ago with 30s leeway: %s", rej.Message)
		}
	})
}

func noneToken(t *testing.T, c jwt.MapClaims) string {
	s, err := jwt.NewWithClaims(jwt.SigningMethodNone, c).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func hsToken(t *testing.T, c jwt.MapClaims) string {
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString([]byte("guessable"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}
