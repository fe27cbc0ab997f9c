# Evo. `make run` serves on the embedded defaults; `make test` runs every test.
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
# Where `make build` writes the binary (the Dockerfile and deploy/cluster.sh set it).
BIN ?= evo
# make build's settings (CGO off, -trimpath), for vet and bench-go too: one compile
# of each package then serves vet, the Go benchmarks, make build and the binaries
# the cluster and chaos tests build (a fresh machine compiles the tree once per
# setting; two minutes here).
RELEASE_ENV = CGO_ENABLED=0 GOFLAGS="$(strip $(shell $(GO) env GOFLAGS) -trimpath)"

.PHONY: help run test build vet fmt cluster cluster-stop cluster-status

## serve on the embedded defaults (go run .)
run:
	$(GO) run .

# `make help` lists the targets: each one's "## " line just above it.
## list the targets
help:
	@awk '/^## /{d=substr($$0,4);next} /^[a-z][a-z0-9-]*:/{if(d!=""){sub(/:.*/,"");printf "  make %-17s %s\n",$$0,d}} {d=""}' $(MAKEFILE_LIST)

# vet, then every package with the race detector. Tests that need a missing
# PostgreSQL or Redis are skipped and listed at the end (in CI they fail).
## go vet, then every test with the race detector; skips are listed with their reasons
test: vet
	$(GO) tool gotestsum --format pkgname-and-test-fails --format-hide-empty-pkg -- -race -count=1 ./...

## go vet ./... (with the release build's settings)
vet:
	$(RELEASE_ENV) $(GO) vet ./...

# The one release build: the Dockerfile and deploy/cluster.sh (and so the
# cluster test in CI) run exactly this.
## the static release binary (BIN=evo; VERSION from git describe)
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w -X github.com/evotodo/evo/app.Version=$(VERSION)" -o $(BIN) .

## gofmt every Go file
fmt:
	gofmt -l -w $$(git ls-files '*.go')

# Two replicas on 127.0.0.1:8001/8002 behind nginx on :8080, against the local
# PostgreSQL (database evo_cluster) and Redis; see deploy/cluster.sh.
## two replicas behind nginx on :8080 (deploy/cluster.sh start)
cluster:
	deploy/cluster.sh start

## stop the cluster
cluster-stop:
	deploy/cluster.sh stop

## what of the cluster runs
cluster-status:
	deploy/cluster.sh status

# The web console in a real browser (e2e/console.test.mjs): Debian's Chromium
# (/usr/bin/chromium, or CHROMIUM_PATH) driven by playwright-core against a
# server the test builds and starts. Without Chromium it is skipped and says
# why; in CI (CI set) it fails. Writes its screenshot to e2e/out/console.png;
# `make e2e SCREENSHOT=docs/console.png` updates the README's.
SCREENSHOT ?=
.PHONY: e2e
## the console in headless Chromium (screenshot: SCREENSHOT=docs/console.png)
e2e:
	test -d e2e/node_modules/playwright-core || npm ci --prefix e2e --no-audit --no-fund
	E2E_SCREENSHOT=$(SCREENSHOT) node --test e2e/

# Benchmarks (bench/README.md). `make bench` starts a cluster with deploy/cluster.sh,
# runs the load tool's standard shapes against it and prints the results table (about
# 6 minutes; SHAPES=a,c or LOAD_FLAGS=... to narrow it). `make bench-centrifugo` runs
# shapes d, a, b, c against two Centrifugo nodes, for comparison (not in CI).
# `make bench-go` runs the Go benchmarks once each, as a smoke test (CI); BENCHTIME=2s
# for numbers.
BENCHTIME ?= 1x
BENCH_PKGS = ./realtime/ ./store/ ./store/postgres/ ./app/ ./app/auth/

.PHONY: bench bench-centrifugo bench-go
## the load shapes against a fresh cluster (about 6 minutes)
bench:
	bench/run.sh

## the same shapes against two Centrifugo nodes, for comparison
bench-centrifugo:
	bench/centrifugo.sh

## the Go benchmarks once each (BENCHTIME=2s for numbers)
bench-go:
	$(RELEASE_ENV) $(GO) test -run '^$$' -bench . -benchtime=$(BENCHTIME) -benchmem $(BENCH_PKGS)

# Fuzzing: every fuzz target, one after the other, for FUZZTIME each (CI: the
# default; 12 targets x 5 s, plus building each package's instrumented tests
# once). The seed corpora are in each package's
# testdata/fuzz/<Target>/ and run with `make test` too; a failure writes the
# input there (commit it as a regression seed once fixed).
# `make fuzz FUZZTIME=5m` for a longer run.
FUZZTIME ?= 5s
FUZZ_TARGETS = \
	./realtime/:FuzzParseFrame ./realtime/:FuzzClientFrames \
	./app/:FuzzDecodeJSON ./app/:FuzzRESTBody ./app/:FuzzRESTQuery ./app/:FuzzChatModelOutput \
	./app/auth/:FuzzVerify ./app/auth/:FuzzVerifySigned \
	./agent/:FuzzBuiltinParseIntent ./agent/:FuzzBuiltinRoundTrip ./agent/:FuzzBuiltinChat ./agent/:FuzzBuiltinChoice

.PHONY: fuzz
## every fuzz target for FUZZTIME (5s) each
fuzz:
	@set -e; out=$$(mktemp); trap 'rm -f $$out' EXIT; \
	for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; corpus=$${pkg}testdata/fuzz/$$name; \
		before=$$(ls $$corpus 2>/dev/null | wc -l); \
		echo "fuzz $$pkg $$name ($(FUZZTIME))"; \
		if $(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 5s $$pkg >$$out 2>&1; then \
			grep -v '^fuzz: elapsed' $$out | grep -v '^PASS' | tail -n 1; \
		elif grep -qx '    context deadline exceeded' $$out && [ "$$(ls $$corpus 2>/dev/null | wc -l)" = "$$before" ]; then \
			echo "  passed: no failing input (the run ended with Go's spurious \"context deadline exceeded\", golang/go#75804)"; \
		else \
			cat $$out; exit 1; \
		fi; \
	done

# The chaos test (chaos/chaos_test.go, build tag chaos): two replicas of the
# release binary on a private PostgreSQL cluster and a private Redis (none of
# the machine's own), 300 sockets and a stream of REST, MCP and chat changes,
# while a replica is SIGKILLed, Redis restarts, PostgreSQL stops, sockets drop.
# Prints its counts (losses and duplicates must be 0). About 90 s; needs
# PostgreSQL's server binaries (initdb, pg_ctl) and redis-server.
# Then TestRedisCluster (chaos/cluster_test.go, about 20 s): the same on a private
# 3-master 3-replica Redis Cluster, through a master kill.
.PHONY: chaos
## the chaos test: replicas killed, Redis and PostgreSQL restarted (about 90 s)
chaos:
	$(GO) test -tags chaos -count=1 -timeout 8m -v -run '^TestChaos$$' ./chaos/
	$(GO) test -tags chaos -count=1 -timeout 3m -v -run '^TestRedisCluster$$' ./chaos/

# The soak run (issue 8, bench/soak.sh; not in CI): a fresh cluster on ports 8201, 8202,
# 8280, SOAK_SOCKETS (5000) mostly idle sockets and SOAK_RATE (50) changes/s for
# SOAK_DURATION (10m); loss must be 0, and each replica's goroutines, heap in use and RSS
# must return near their baseline after the clients leave. See bench/README.md, "Soak".
.PHONY: soak
## the soak run: 5000 sockets for SOAK_DURATION (10m)
soak:
	bench/soak.sh
