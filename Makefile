# Evo. `make run` serves on the embedded defaults; `make test` runs every test.
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
# Where `make build` writes the binary (the Dockerfile and deploy/cluster.sh set it).
BIN ?= evo

.PHONY: run test build vet fmt cluster cluster-stop cluster-status

run:
	$(GO) run .

# vet, then every package with the race detector. Tests that need a missing
# PostgreSQL or Redis are skipped and listed at the end (in CI they fail).
test: vet
	$(GO) tool gotestsum --format pkgname-and-test-fails --format-hide-empty-pkg -- -race -count=1 ./...

vet:
	$(GO) vet ./...

# The one release build: the Dockerfile and deploy/cluster.sh (and so the
# cluster test in CI) run exactly this.
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w -X github.com/evotodo/evo/app.Version=$(VERSION)" -o $(BIN) .

fmt:
	gofmt -l -w $$(git ls-files '*.go')

# Two replicas on 127.0.0.1:8001/8002 behind nginx on :8080, against the local
# PostgreSQL (database evo_cluster) and Redis; see deploy/cluster.sh.
cluster:
	deploy/cluster.sh start

cluster-stop:
	deploy/cluster.sh stop

cluster-status:
	deploy/cluster.sh status
