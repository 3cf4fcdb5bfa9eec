package main

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"debug/elf"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// dockerfile is the part of the repository's Dockerfile these tests read:
// the build stage's ARG defaults and RUN commands, and the final stage's
// instructions by keyword.
type dockerfile struct {
	buildArgs map[string]string
	buildRuns []string
	final     map[string][]string // keyword → arguments, in order
}

// parseDockerfile joins continued lines, drops comments and splits the
// file into its stages. A shape it does not expect (no stage named build,
// an instruction before any FROM) is an error.
func parseDockerfile(path string) (dockerfile, error) {
	d := dockerfile{buildArgs: map[string]string{}, final: map[string][]string{}}
	f, err := os.Open(path)
	if err != nil {
		return d, err
	}
	defer f.Close()
	var lines []string
	var cur strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") || (line == "" && cur.Len() == 0) {
			continue
		}
		if rest, ok := strings.CutSuffix(line, `\`); ok {
			cur.WriteString(rest + " ")
			continue
		}
		cur.WriteString(line)
		lines = append(lines, cur.String())
		cur.Reset()
	}
	if err := sc.Err(); err != nil {
		return d, err
	}
	stage := ""
	for _, l := range lines {
		kw, args, _ := strings.Cut(l, " ")
		kw = strings.ToUpper(kw)
		args = strings.TrimSpace(args)
		if kw == "FROM" {
			f := strings.Fields(args)
			stage = "final"
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				stage = f[2]
			}
			d.final = map[string][]string{} // only the last stage is the image
			continue
		}
		switch {
		case stage == "":
			return d, fmt.Errorf("Dockerfile: %s before any FROM", kw)
		case stage == "build" && kw == "ARG":
			name, def, _ := strings.Cut(args, "=")
			d.buildArgs[name] = def
		case stage == "build" && kw == "RUN":
			d.buildRuns = append(d.buildRuns, args)
		}
		d.final[kw] = append(d.final[kw], args)
	}
	if len(d.buildRuns) == 0 {
		return d, fmt.Errorf("Dockerfile: no RUN in a stage named build")
	}
	return d, nil
}

var (
	imageBinOnce sync.Once
	imageBin     string
	imageBinErr  error
)

// imageTestVersion is the VERSION build argument the test builds with.
const imageTestVersion = "9.8.7-imagetest"

// buildLikeTheImage runs the Dockerfile's build-stage RUN commands with sh
// in a copy of the build context (the repository's files, as COPY . .
// would see them), with ARG VERSION set, and returns the binary they made.
// It runs once per test binary; the subtests share it.
func buildLikeTheImage(t *testing.T) string {
	t.Helper()
	imageBinOnce.Do(func() { imageBin, imageBinErr = runBuildStage(imageTestVersion) })
	if imageBinErr != nil {
		t.Fatal(imageBinErr)
	}
	return imageBin
}

func runBuildStage(version string) (string, error) {
	root, err := filepath.Abs("../..")
	if err != nil {
		return "", err
	}
	d, err := parseDockerfile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		return "", err
	}
	ctx, err := os.MkdirTemp("", "tollgate-image-")
	if err != nil {
		return "", err
	}
	// Tracked and new files, as the build context (minus .dockerignore's
	// .git and build leftovers, which git does not list).
	out, err := exec.Command("git", "-C", root, "ls-files", "-co", "--exclude-standard").Output()
	if err != nil {
		return "", fmt.Errorf("git ls-files: %v", err)
	}
	for _, rel := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		src := filepath.Join(root, rel)
		data, err := os.ReadFile(src)
		if os.IsNotExist(err) {
			continue // deleted in the working tree
		}
		if err != nil {
			return "", err
		}
		dst := filepath.Join(ctx, rel)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return "", err
		}
		if err := os.WriteFile(dst, data, 0o644); err != nil {
			return "", err
		}
	}
	env := os.Environ()
	for k, v := range d.buildArgs {
		env = append(env, k+"="+v)
	}
	env = append(env, "VERSION="+version)
	for _, run := range d.buildRuns {
		cmd := exec.Command("sh", "-ec", run)
		cmd.Dir = ctx
		cmd.Env = env
		if b, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("Dockerfile RUN %s: %v\n%s", run, err, b)
		}
	}
	bin := filepath.Join(ctx, "out", "tollgate")
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("the build stage made no out/tollgate (the final stage copies /src/out/tollgate): %v", err)
	}
	return bin, nil
}

// TestDockerfile checks what can be checked of the image without a
// container engine: the final stage's shape, then the build stage run as a
// script, whose binary must be static, carry the version it was given,
// and make TLS connections with the CA roots it embeds.
func TestDockerfile(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary the way the image does")
	}
	t.Parallel()
	d, err := parseDockerfile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}

	t.Run("final stage", func(t *testing.T) {
		join := func(k string) string { return strings.Join(d.final[k], "\n") }
		if u := join("USER"); u != "65532:65532" {
			t.Errorf("USER = %q, want the non-root 65532:65532", u)
		}
		if e := join("ENTRYPOINT"); e != `["/tollgate", "serve"]` {
			t.Errorf("ENTRYPOINT = %q, want [\"/tollgate\", \"serve\"]", e)
		}
		if h := join("HEALTHCHECK"); !strings.Contains(h, `"/tollgate", "healthcheck"`) || !strings.Contains(h, "/health/liveliness") {
			t.Errorf("HEALTHCHECK = %q, want the binary's healthcheck on /health/liveliness", h)
		}
		if c := join("COPY"); !strings.Contains(c, "/etc/ssl/certs/ca-certificates.crt") {
			t.Errorf("the final stage copies no CA bundle: COPY %q", c)
		}
		if _, ok := d.final["RUN"]; ok {
			t.Errorf("the final stage has RUN %q: scratch has no shell", d.final["RUN"])
		}
		for _, run := range d.buildRuns {
			if strings.Contains(run, "go build") && !(strings.Contains(run, "CGO_ENABLED=0") && strings.Contains(run, "-trimpath") && strings.Contains(run, "internal/server.Version=${VERSION}")) {
				t.Errorf("build RUN %q: want CGO_ENABLED=0, -trimpath and the version stamped from ARG VERSION", run)
			}
		}
	})

	bin := buildLikeTheImage(t)
	version := imageTestVersion

	t.Run("version stamped", func(t *testing.T) {
		out, err := exec.Command(bin, "version").CombinedOutput()
		if err != nil {
			t.Fatalf("version: %v\n%s", err, out)
		}
		if got := strings.TrimSpace(string(out)); got != "tollgate "+version {
			t.Errorf("version printed %q, want %q", got, "tollgate "+version)
		}
	})

	t.Run("static", func(t *testing.T) {
		f, err := elf.Open(bin)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
				t.Errorf("program header %v: the binary is dynamically linked and will not start FROM scratch", p.Type)
			}
		}
		for _, name := range []string{".interp", ".dynamic"} {
			if f.Section(name) != nil {
				t.Errorf("section %s present: the binary is dynamically linked", name)
			}
		}
		if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
			t.Errorf("imports shared libraries %v", libs)
		}
	})

	t.Run("TLS roots", func(t *testing.T) { testImageTLSRoots(t, bin) })
}

// testImageTLSRoots runs the image's binary against a local HTTPS server
// whose certificate a test CA signed, with the system's roots hidden
// (SSL_CERT_FILE and SSL_CERT_DIR at empty places, as in a scratch image).
//
//   - no roots named: the handshake fails (nothing trusts the test CA; the
//     host's roots do not leak in);
//   - SSL_CERT_FILE names the CA bundle, DEPLOY.md's way of adding a private
//     CA: the call succeeds;
//   - the same with GODEBUG=x509usefallbackroots=1, which makes crypto/x509
//     replace the system roots with the fallback roots a package registered:
//     the call fails again, which it can only do if the binary carries the
//     embedded bundle (without one the CA file would still be used).
func testImageTLSRoots(t *testing.T, bin string) {
	dir := t.TempDir()
	caPEM, serverCert := testCA(t)
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, caPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	emptyFile := filepath.Join(dir, "empty.pem")
	if err := os.WriteFile(emptyFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	emptyDir := filepath.Join(dir, "certs")
	if err := os.Mkdir(emptyDir, 0o755); err != nil {
		t.Fatal(err)
	}

	var hits atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.URL.Path == "/health/liveliness" {
			w.Write([]byte(`"I'm alive!"`))
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	srv.TLS = serverCert
	srv.StartTLS()
	defer srv.Close()

	run := func(certFile string, extra []string, path string) (string, error) {
		cmd := exec.Command(bin, "healthcheck", "--timeout", "20s", "--url", srv.URL+path)
		cmd.Env = append(os.Environ(), "SSL_CERT_FILE="+certFile, "SSL_CERT_DIR="+emptyDir, "GODEBUG=")
		cmd.Env = append(cmd.Env, extra...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}

	out, err := run(emptyFile, nil, "/health/liveliness")
	if err == nil || !strings.Contains(out, "certificate signed by unknown authority") {
		t.Errorf("no roots named: want the handshake refused (unknown authority), got err=%v\n%s", err, out)
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("server answered %d requests over an untrusted handshake", n)
	}

	if out, err := run(caFile, nil, "/health/liveliness"); err != nil {
		t.Errorf("SSL_CERT_FILE=ca.pem: want success, got %v\n%s", err, out)
	}
	if n := hits.Load(); n != 1 {
		t.Errorf("server saw %d requests after the trusted call, want 1", n)
	}
	if out, err := run(caFile, nil, "/down"); err == nil || !strings.Contains(out, "503") {
		t.Errorf("healthcheck of a 503: want failure naming 503, got err=%v\n%s", err, out)
	}

	out, err = run(caFile, []string{"GODEBUG=x509usefallbackroots=1"}, "/health/liveliness")
	if err == nil || !strings.Contains(out, "certificate signed by unknown authority") {
		t.Errorf("with the fallback roots forced the test CA must no longer be trusted (the embedded bundle replaces it); got err=%v\n%s", err, out)
	}
}

// testCA makes a CA and a server certificate for 127.0.0.1 signed by it.
func testCA(t *testing.T) ([]byte, *tls.Config) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "Tollgate test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{leafDER}, PrivateKey: key}}}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), cfg
}
