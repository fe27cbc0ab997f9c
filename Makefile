# Evo. `make run` serves on the embedded defaults; `make test` runs every test.
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

.PHONY: run test build vet fmt

run:
	$(GO) run .

# vet, then every package with the race detector. Tests that need a missing
# PostgreSQL or Redis are skipped and listed at the end (in CI they fail).
test: vet
	$(GO) tool gotestsum --format pkgname-and-test-fails --format-hide-empty-pkg -- -race -count=1 ./...

vet:
	$(GO) vet ./...

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w -X github.com/evotodo/evo/app.Version=$(VERSION)" -o evo .

fmt:
	gofmt -l -w $$(git ls-files '*.go')
