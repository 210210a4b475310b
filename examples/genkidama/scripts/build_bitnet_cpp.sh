#!/usr/bin/env bash
# Builds bitnet.cpp (microsoft/BitNet) BESIDE the project, never inside it: its code is not ours
# to commit. The pair of commits is the one complete pair in the stored mirrors (see
# shared/reference/peers.md): BitNet c82b5e6 (2024-10-18) pins the Eddie-Wang1120/llama.cpp fork's
# merge-dev head 406a5036. Newer BitNet commits pin fork commits the mirror does not hold.
#
# Usage: build_bitnet_cpp.sh [DEST]   (DEST defaults to /work/peers/bitnet)
# Needs: the bare mirrors that the search tool's `fetch` makes for github:microsoft/BitNet and
# github:Eddie-Wang1120/llama.cpp (paths below, override with BITNET_MIRROR / FORK_MIRROR),
# clang (Debian's `clang`; BitNet's CMakeLists refuses gcc) and cmake (Debian's or PyPI's).
# Result: DEST/build/bin/{llama-cli,llama-perplexity,llama-quantize,llama-bench}.
set -euo pipefail
DEST=${1:-/work/peers/bitnet}
BITNET_MIRROR=${BITNET_MIRROR:-/work/.mirror/microsoft+BitNet/repo}
FORK_MIRROR=${FORK_MIRROR:-/work/.mirror/Eddie-Wang1120+llama.cpp/repo}
BITNET_COMMIT=c82b5e6
FORK_COMMIT=406a5036
JOBS=${JOBS:-2}

command -v clang >/dev/null || { apt-get update && apt-get install -y clang; }
command -v cmake >/dev/null || apt-get install -y cmake

mkdir -p "$DEST"
git -C "$BITNET_MIRROR" archive "$BITNET_COMMIT" | tar -x -C "$DEST"
rm -rf "$DEST/3rdparty/llama.cpp" && mkdir -p "$DEST/3rdparty/llama.cpp"
# The fork's vocab GGUFs under models/ are not stored in the mirror: leave them out.
git -C "$FORK_MIRROR" archive "$FORK_COMMIT" -- . ':(exclude)models' | tar -x -C "$DEST/3rdparty/llama.cpp"
# setup_env.py's job: the TL2 LUT kernels header the build includes (unused by I2_S, but required).
cp "$DEST/preset_kernels/bitnet_b1_58-large/bitnet-lut-kernels-tl2.h" "$DEST/include/bitnet-lut-kernels.h"

cmake -S "$DEST" -B "$DEST/build" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++
nice -n 10 cmake --build "$DEST/build" -j"$JOBS" \
  --target llama-cli llama-perplexity llama-quantize llama-bench
ls -l "$DEST/build/bin/"
