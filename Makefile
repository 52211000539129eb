# Everything a developer or CI runs. `make test` is the test command CI calls.
GO ?= go
PKGS := ./...

.PHONY: all build test check vet fmt-check proto proto-check race bench demo

all: build

build:
	$(GO) build -o bin/jasper ./cmd/jasper

# The full test suite: static checks, generated-code check, race-enabled tests.
test: check race

check: vet fmt-check proto-check

vet:
	$(GO) vet $(PKGS)

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

proto:
	$(GO) tool buf lint
	$(GO) tool buf generate

# Regenerating the protobuf code must give no diff.
proto-check: proto
	@git diff --exit-code -- proto/ || (echo "generated code is stale: run make proto and commit"; exit 1)

race:
	$(GO) test -race -timeout 30m $(PKGS)

bench:
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

demo: build
	./bin/jasper demo
