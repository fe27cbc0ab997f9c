# syntax=docker/dockerfile:1
# Evo as a container: a static binary (CGO off) on Alpine, run as a non-root
# user, DATA_DIR on a volume.
#
#   docker build --build-arg VERSION=$(git describe --tags --always --dirty) -t evo .
#   docker run -p 8000:8000 -v evo-data:/data -e BETTER_AUTH_URL=https://app.example.com evo
#   docker run -p 127.0.0.1:8000:8000 -v evo-data:/data -e HOST=0.0.0.0 evo   # dev issuer, this machine only
#
# Without BETTER_AUTH_URL the server is its own dev issuer and listens on the
# container's loopback only, unless HOST says otherwise.
#
# docker-compose.yml runs two of these behind nginx with PostgreSQL and Redis.

# At least go.mod's `go` line: the image pins its toolchain (GOTOOLCHAIN=local).
ARG GO_VERSION=1.26.8

FROM golang:${GO_VERSION} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download
COPY . .
ARG VERSION=dev
# The release build is the Makefile's `build` target, the command CI runs
# (deploy/cluster.sh builds with it too): CGO_ENABLED=0 go build -trimpath
# -ldflags "-s -w -X github.com/evotodo/evo/app.Version=$VERSION".
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    make build VERSION="${VERSION}" BIN=/out/evo \
 && /out/evo version

# Alpine rather than distroless: the HEALTHCHECK needs an HTTP client (busybox
# wget), and evo has no healthcheck subcommand.
FROM alpine:3.22
RUN addgroup -S -g 10001 evo \
 && adduser -S -D -H -u 10001 -G evo -h /data -s /sbin/nologin evo \
 && mkdir -p /data && chown evo:evo /data
COPY --from=build /out/evo /usr/local/bin/evo
ENV PORT=8000 \
    DATA_DIR=/data
VOLUME /data
EXPOSE 8000
USER evo:evo
# Liveness only; /ready (database and Redis) is what a balancer or compose waits on.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD wget -q -O /dev/null -T 2 "http://127.0.0.1:${PORT}/health" || exit 1
ENTRYPOINT ["/usr/local/bin/evo"]
CMD ["serve"]
