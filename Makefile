# vmdib: build, lint, test, bench. `make check` is the fast loop; `make test` runs everything, QEMU included.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
TAP := npx tap --disable-coverage

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

# Unit tests: everything under test/ except the tests that boot QEMU (test/vm, test/e2e).
unit: build
	$(TAP) $$(find dist/test -name '*.js' -not -path 'dist/test/vm/*' -not -path 'dist/test/e2e/*' | sort)

check: lint typecheck unit

# Every test, including the ones that boot the appliance and the images it builds.
test: build
	$(TAP) $$(find dist/test -name '*.js' | sort)

vm-test: build
	$(TAP) $$(find dist/test/vm dist/test/e2e -name '*.js' 2>/dev/null | sort)

bench: build
	node dist/bench/run.js

clean:
	rm -rf dist .tap
