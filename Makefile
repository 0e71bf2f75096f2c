# vmdib: build, lint, test, bench. `make check` is the fast loop; `make test` runs everything, QEMU included.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
TAP := npx tap --disable-coverage
# tap ends with `# { total: N, pass: P, fail: F }`; CI systems read a plain `P passed, F failed` line.
SUMMARY := awk '{ print } /^\# \{ total:/ { p = f = s = 0; if (match($$0, /pass: [0-9]+/)) p = substr($$0, RSTART + 6, RLENGTH - 6); if (match($$0, /fail: [0-9]+/)) f = substr($$0, RSTART + 6, RLENGTH - 6); if (match($$0, /skip: [0-9]+/)) s = substr($$0, RSTART + 6, RLENGTH - 6); printf "%d passed, %d failed, %d skipped\n", p, f, s }'

# Shell under guest/ and elements/: every file whose first line names bash or sh.
SHELL_FILES = $(shell grep -rlE '^\#!.*\b(ba)?sh\b' guest elements 2>/dev/null | sort)

.PHONY: all build check lint fmt typecheck unit test vm-test bench clean

all: build

node_modules: package-lock.json
	npm ci --no-audit --no-fund
	touch node_modules

build: node_modules
	npx tsc -p .

typecheck: node_modules
	npx tsc -p . --noEmit

lint: node_modules
	npx biome check .
	$(if $(SHELL_FILES),shellcheck -x $(SHELL_FILES),@true)

fmt: node_modules
	npx biome check --write .

# Compiled test files, without the modules tests import (helpers) or spawn (controller-child).
TEST_FILES = find dist/test -name '*.js' -not -path '*/helpers/*' -not -name helpers.js -not -name controller-child.js

# Unit tests: everything under test/ except the tests that boot QEMU (test/vm, test/e2e).
unit: build
	$(TAP) $$($(TEST_FILES) -not -path 'dist/test/vm/*' -not -path 'dist/test/e2e/*' | sort) | $(SUMMARY)

check: lint typecheck unit

# Every test, including the ones that boot the appliance and the images it builds.
test: build
	$(TAP) $$($(TEST_FILES) | sort) | $(SUMMARY)

vm-test: build
	$(TAP) $$($(TEST_FILES) \( -path 'dist/test/vm/*' -o -path 'dist/test/e2e/*' \) | sort) | $(SUMMARY)

# BENCHMARKS.md from real, interleaved runs on this machine (not part of `make test` or CI; about two hours under
# TCG for all groups: ready, w1, w2). `make bench BENCH=ready` (group or workload names, comma-separated) reruns a
# part; ROUNDS=N rounds (default 3 for ready, 1 for the image builds w1 and w2). Run it as a normal user: native DIB
# rows need root and use `sudo -n` (run `sudo -v` first), or are skipped with the reason.
bench: build
	node dist/bench/run.js

clean:
	rm -rf dist .tap
