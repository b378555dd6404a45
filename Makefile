# Cairn: the commands a developer and a user run. See README.md.
SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(PATH)
GO ?= go
BIN := bin/cairn

.PHONY: run build test lint bench fuzz clean deps

## run: build and start a one-node Cairn serving the default volume over NBD on 127.0.0.1:10809
run: build
	./$(BIN) serve

build:
	@scripts/deps.sh
	$(GO) build -o $(BIN) ./cmd/cairn

## test: formatting, vet, and every test with the race detector (installs what it needs)
test:
	@scripts/deps.sh test
	@unformatted=$$(gofmt -l .); \
	if [ -n "$$unformatted" ]; then echo "gofmt would change:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GO) build -o $(BIN) ./cmd/cairn
	$(GO) test -race -count=1 -timeout 25m ./...

lint:
	@test -z "$$(gofmt -l .)" || { gofmt -l .; exit 1; }
	$(GO) vet ./...

## bench: Go benchmarks and the fio suite against nbdkit, printed as ratios
bench: build
	@scripts/deps.sh bench
	$(GO) test -run '^$$' -bench . -benchmem -count 1 ./blocks/... ./volume/...
	scripts/bench-nbd.sh -bin $(BIN)

## fuzz: run each fuzz target for a short while
# A target that fails is run once more: Go's fuzz coordinator can end a
# -fuzztime run with "context deadline exceeded" and no failing input
# (golang/go#75804, fixed in go1.27), while a real failure is written to
# testdata/fuzz and fails the second run at once.
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime 20s $$pkg || \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime 20s $$pkg || exit 1; \
	  done; \
	done

clean:
	rm -rf bin
