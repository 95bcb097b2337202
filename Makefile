# The README's commands. Each installs what is missing (Debian packages), configures and builds.
BUILD ?= build
JOBS ?= 2
export OMP_WAIT_POLICY ?= passive

.PHONY: all deps build demo test bench-twin clean

all: build

deps:
	@scripts/install-deps.sh

$(BUILD)/CMakeCache.txt: | deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release

build: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

demo: build
	$(BUILD)/blocklab demo --out runs/demo

test: build
	cd $(BUILD) && ctest --output-on-failure

# blocklab's classifier step against the same step in PyTorch (bench/pytorch_twin.py). Debian's
# python3-torch (the same libtorch 1.13) is installed here only: neither the build nor the tests need it.
# Arguments: make bench-twin TWIN_ARGS="--set model.layers=12 --set model.hidden=256 --repeats 3"
bench-twin: build
	@scripts/install-deps.sh python3-torch
	$(BUILD)/blocklab bench twin $(TWIN_ARGS)

clean:
	rm -rf $(BUILD)
