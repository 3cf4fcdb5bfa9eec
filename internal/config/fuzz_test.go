package config

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse: any config file is refused with an error or loads into a
// config whose derived settings can all be read.
func FuzzParse(f *testing.F) {
	for _, name := range []string{"litellm_step1.yaml", "litellm_tiers.yaml", "agw_ratelimit.yaml", "litellm_custom_auth.yaml"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("general_settings:\n  max_request_size_mb: 0.5\n  max_response_size_mb: 1\nrouter_settings:\n  fallbacks: [{a: [b]}]\n  timeout: 3\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("fuzz.yaml", data)
		if err != nil {
			return
		}
		_ = cfg.Routing()
		_, _, _ = cfg.MasterKey(), cfg.DatabaseURL(), cfg.RedisURL()
		_, _, _ = cfg.MaxRequestBytes(), cfg.MaxResponseBytes(), cfg.RequestTimeout()
		_ = cfg.GlobalMaxParallelRequests()
		if cfg.MaxRequestBytes() <= 0 || cfg.MaxResponseBytes() <= 0 || cfg.RequestTimeout() <= 0 {
			t.Fatalf("non-positive limits from %q", data)
		}
	})
}
