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

define PRUNE
	find "$(ARTIFACTS_DIR)/python" -depth -type d \( -name tests -o -name __pycache__ -o -name include \) -exec rm -rf {} +
	find "$(ARTIFACTS_DIR)/python" -type f \( -name '*.pyi' -o -name '*.pxd' -o -name '*.pyx' -o -name '*.h' \) -delete
endef
