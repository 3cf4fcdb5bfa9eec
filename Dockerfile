# Tollgate's container image: a static binary on scratch.
#
#   docker build --build-arg VERSION=$(git describe --tags --always) -t tollgate .
#   docker run -p 4000:4000 -e TOLLGATE_MASTER_KEY=sk-... -v tollgate-data:/var/lib/tollgate tollgate
#
# Without a master key `serve` binds 127.0.0.1 only (README "Security"): set
# TOLLGATE_MASTER_KEY (or master_key in the config) for the port to answer.
# cmd/tollgate TestDockerfileBuildStage runs this file's build-stage RUN lines
# as a script and checks the binary they make.

FROM golang:1.26-bookworm AS build
ARG VERSION=dev
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -buildvcs=false \
      -ldflags "-s -w -X github.com/tollgate/tollgate/internal/server.Version=${VERSION}" \
      -o out/tollgate ./cmd/tollgate
# The state directory (SQLite's tollgate.db when no PostgreSQL is set), owned
# by the runtime user: scratch has no shell to make it there.
RUN mkdir -p out/data

FROM scratch
# CA roots for HTTPS to providers. The binary also embeds Mozilla's bundle
# (golang.org/x/crypto/x509roots/fallback) for when this file is absent; to
# trust a private CA, mount a bundle and set SSL_CERT_FILE to it.
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /src/out/tollgate /tollgate
COPY --from=build --chown=65532:65532 /src/out/data /var/lib/tollgate
USER 65532:65532
WORKDIR /var/lib/tollgate
EXPOSE 4000
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
  CMD ["/tollgate", "healthcheck", "--url", "http://127.0.0.1:4000/health/liveliness"]
ENTRYPOINT ["/tollgate", "serve"]
CMD ["--port", "4000"]
