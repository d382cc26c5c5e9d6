# hull: the two commands of the README live here.
#   make test   install what is missing, build everything, run every test (host + lab)
.PHONY: all test deps build guest clean-cache

all: build

deps:
	scripts/install-deps

build:
	cargo build --workspace --locked

guest: deps
	guest/build

test: deps
	scripts/run-tests

clean-cache:
	rm -rf "$${HULL_CACHE:-$$HOME/.cache/hull}"
