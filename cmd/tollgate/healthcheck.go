package main

import (
	"flag"
	"fmt"
	"net/http"
	"os"
	"time"

	// The CA roots of Mozilla's bundle, compiled in: crypto/x509 uses them
	// only when the system has none (a FROM scratch image), so HTTPS to
	// providers works there too. A CA file the operator names with
	// SSL_CERT_FILE or SSL_CERT_DIR still wins (DEPLOY.md).
	_ "golang.org/x/crypto/x509roots/fallback"
)

// runHealthcheck is the container image's HEALTHCHECK: images without a
// shell or curl run the binary itself. It GETs url and succeeds on a 2xx.
func runHealthcheck(args []string) error {
	fs := flag.NewFlagSet("healthcheck", flag.ExitOnError)
	def := os.Getenv("TOLLGATE_HEALTHCHECK_URL")
	if def == "" {
		def = "http://127.0.0.1:4000/health/liveliness"
	}
	url := fs.String("url", def, "URL to GET; 2xx is healthy (env TOLLGATE_HEALTHCHECK_URL)")
	timeout := fs.Duration("timeout", 5*time.Second, "how long to wait for the answer")
	_ = fs.Parse(args)
	client := &http.Client{Timeout: *timeout}
	resp, err := client.Get(*url)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("healthcheck: %s answered %s", *url, resp.Status)
	}
	return nil
}
