# syntax=docker/dockerfile:1
# The training image: what the AWS Batch job definition (TrainingJobDefinition) runs.
# Build and push with `make train-image` (docs/training.md, "The training image").
#
# Base: python:3.12-slim-bookworm (the Lambda runtime's Python), pinned by the digest of its
# multi-platform index, so a rebuild gets the same bytes. To move it, read the new digest with
# `docker buildx imagetools inspect python:3.12-slim-bookworm` and change this one line.
FROM python:3.12-slim-bookworm@sha256:782412e85d0f0984994c290652577d4018aff08145c85b262bb63dc0c7522254

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/shelfwise

# Dependencies first (their layer is reused while only the code changes): the pinned files derived
# from pyproject.toml and the lock (`make lock`), which the entrypoint test installs from too.
COPY requirements/train.txt requirements/constraints.txt requirements/
RUN python -m pip install -c requirements/constraints.txt -r requirements/train.txt
# PyTorch for the families that need it (TrainingFamilies, e.g. sequential): the hashed lock that
# `make torch` installs, at train.txt's versions for what the two share. PyPI's Linux wheel is the
# CUDA build (about 4 GB with its nvidia-* packages); it runs on the job's CPUs.
COPY requirements/torch-lock.txt requirements/
RUN python -m pip install --require-hashes -r requirements/torch-lock.txt

# The package itself: the domain code only (shared/shelfwise), never the local runtime.
COPY pyproject.toml README.md ./
COPY shared/shelfwise shared/shelfwise
RUN python -m pip install --no-deps . && rm -rf shared build

RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/shelfwise shelfwise
USER 10001:10001
WORKDIR /home/shelfwise

# The job definition's Command is the argument list after `shelfwise`
# (train --curated-bucket ... --register ...); without one the image prints the train help.
ENTRYPOINT ["shelfwise"]
CMD ["train", "--help"]
