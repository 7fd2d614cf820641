// Package jwttest makes signing keys, their JWKS and signed tokens for
// tests of JWT authentication (RS256, ES256, EdDSA). Keys are generated
// per test; nothing here is for production.
package jwttest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"testing"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
)

// Key is one signing key with its key id and algorithm.
type Key struct {
	KID    string
	Alg    string
	method jwt.SigningMethod
	priv   crypto.Signer
}

// NewKeys generates one key of each algorithm: RS256, ES256, EdDSA.
func NewKeys(t testing.TB) []*Key {
	t.Helper()
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, dk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return []*Key{
		{KID: "rsa-1", Alg: "RS256", method: jwt.SigningMethodRS256, priv: rk},
		{KID: "ec-1", Alg: "ES256", method: jwt.SigningMethodES256, priv: ek},
		{KID: "ed-1", Alg: "EdDSA", method: jwt.SigningMethodEdDSA, priv: dk},
	}
}

// JWKS returns the public JWKS of keys.
func JWKS(t testing.TB, keys ...*Key) []byte {
	t.Helper()
	var set jwkset.JWKSMarshal
	for _, k := range keys {
		j, err := jwkset.NewJWKFromKey(k.priv.Public(), jwkset.JWKOptions{
			Metadata: jwkset.JWKMetadataOptions{KID: k.KID, ALG: jwkset.ALG(k.Alg), USE: jwkset.UseSig},
		})
		if err != nil {
			t.Fatal(err)
		}
		set.Keys = append(set.Keys, j.Marshal())
	}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Sign signs claims with k.
func (k *Key) Sign(t testing.TB, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(k.method, claims)
	tok.Header["kid"] = k.KID
	s, err := tok.SignedString(k.priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
