# Shared recipe for the dependency layers, included by layers/<name>/Makefile (which sets HERE to
# its own folder: `sam build` runs make from a scratch directory).
#
# Wheels are chosen for Lambda, not for the building machine: manylinux x86_64, CPython 3.12,
# binary only. So `sam build` works from any local Python and needs no Docker. Then files that
# Lambda never uses (tests, headers, type stubs, unused native modules) are pruned, because
# serving must stay under 150 MB unzipped and every function under Lambda's 250 MB.
PIP ?= python3 -m pip
LAMBDA_PIP = $(PIP) install --quiet --no-compile --disable-pip-version-check \
	--platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
	--implementation cp --python-version 3.12 --abi cp312 --only-binary=:all: \
	-c $(HERE)../../requirements/constraints.txt -r $(HERE)requirements.txt -t "$(ARTIFACTS_DIR)/python"

# Lambda mounts layers read-only under /opt, so Python cannot cache bytecode there: a layer without
# .pyc files is compiled from source on every cold start (measured: importing the serving
# libraries took 1.24-1.76 s from source and 0.65-0.84 s with .pyc). So the layer ships them,
# compiled by the build's Python when it is 3.12, the runtime's version (bytecode is per minor
# version); "unchecked-hash" because unzipping does not keep the mtimes a timestamp check reads.
define COMPILE
	if python3 -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))'; then \
	  python3 -m compileall -q -j 0 --invalidation-mode unchecked-hash "$(ARTIFACTS_DIR)/python" > /dev/null; \
	else echo "layer: built by Python $$(python3 -V), not 3.12: no .pyc shipped (slower cold starts)"; fi
endef

define PRUNE
	find "$(ARTIFACTS_DIR)/python" -depth -type d \( -name tests -o -name __pycache__ -o -name include \) -exec rm -rf {} +
	find "$(ARTIFACTS_DIR)/python" -type f \( -name '*.pyi' -o -name '*.pxd' -o -name '*.pyx' -o -name '*.h' \) -delete
endef
