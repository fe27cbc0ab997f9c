package auth

import (
	"path/filepath"
	"sync"
	"testing"
)

// TestLoadIssuerConcurrent starts many issuers on one new key file at once,
// as replicas sharing DATA_DIR do: all must succeed with the same key.
func TestLoadIssuerConcurrent(t *testing.T) {
	for round := range 20 {
		path := filepath.Join(t.TempDir(), "dev-signing-key")
		kids := make([]string, 16)
		errs := make([]error, 16)
		var wg sync.WaitGroup
		for i := range kids {
			wg.Go(func() {
				iss, err := LoadIssuer("http://localhost:8000", path)
				if err == nil {
					kids[i] = iss.KeyID()
				}
				errs[i] = err
			})
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("round %d, issuer %d: %v", round, i, err)
			}
			if kids[i] != kids[0] {
				t.Fatalf("round %d: issuer %d got key %s, issuer 0 got %s", round, i, kids[i], kids[0])
			}
		}
	}
}
