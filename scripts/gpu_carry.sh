#!/usr/bin/env bash
# Prepare what a GPU session carries to the device machine (run here, where pip reaches PyPI): the
# training stack of requirements/lock.txt that the machine's image lacks or holds at other versions,
# as wheels for its Python 3.12 in .whl/ (git-ignored), under the 64 MiB a call may carry. pyarrow
# (datasets wants 24+) is too large to carry: if the image's is older, datasets' import says so.
# bitsandbytes' wheel (about 57 MiB, one library per CUDA release) is unpacked into .whl/bnb/ with
# only the CUDA 13.0 library kept, the one for the image's torch (cu130). docs/benchmarks.md gives the
# command the device machine then runs.
set -euo pipefail
cd "$(dirname "$0")/.."
pin() { sed -n "s/^$1==//p" requirements/lock.txt; }
rm -rf .whl && mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl \
  "transformers==$(pin transformers)" "trl==$(pin trl)" "peft==$(pin peft)" "datasets==$(pin datasets)" \
  "dill==$(pin dill)" "multiprocess==$(pin multiprocess)" "gguf==$(pin gguf)" "regex==$(pin regex)" \
  "typer==$(pin typer)" "rich==$(pin rich)" \
  "bitsandbytes==$(pin bitsandbytes)"
python3 -m zipfile -e .whl/bitsandbytes-*.whl .whl/bnb
rm .whl/bitsandbytes-*.whl
find .whl/bnb/bitsandbytes -name 'libbitsandbytes_cuda*.so' ! -name 'libbitsandbytes_cuda130.so' -delete
du -sh .whl
