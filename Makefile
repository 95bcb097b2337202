# The two commands of the README. Both install what is missing (Debian packages), configure and build.
BUILD ?= build
JOBS ?= 2
export OMP_WAIT_POLICY ?= passive

.PHONY: all deps build demo test clean

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

clean:
	rm -rf $(BUILD)
