# hull: the two commands of the README live here.
#   make demo   install what is missing, build everything, run a container in a hull VM through
#               a private containerd (in the nested-KVM lab when this host cannot run guests)
#   make test   install what is missing, build everything, run every test (host + lab)
# make install puts the shim, hull-vmm, hullctl, the guest image and virtiofsd under PREFIX
# (default /usr/local) and writes /etc/hull/hull.toml.
.PHONY: all test demo install deps build guest clean-cache

all: build

deps:
	scripts/install-deps

build:
	cargo build --workspace --locked

guest: deps
	guest/build

test: deps
	scripts/run-tests

demo:
	scripts/demo

install:
	scripts/install

clean-cache:
	rm -rf "$${HULL_CACHE:-$$HOME/.cache/hull}"
