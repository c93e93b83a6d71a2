#!/usr/bin/env bash
# Packs the built programs with the shared libraries they load into one folder that runs on a
# machine without our build packages (a bare GPU node: the driver and CUDA are there, abseil,
# gRPC, Open MPI's libraries, OpenBLAS and the rest are not). The C runtime and the NVIDIA
# driver/CUDA libraries stay the machine's own: they must match its kernel and driver.
#
# usage: deploy/bundle.sh OUT_DIR [BUILD_DIR]      (default build/)
#   then, on the other machine:  OUT_DIR/run moe-bench --model DIR --device cuda
#                                OUT_DIR/run kernels_test
# mpirun itself is not packed: a node that runs the cluster needs Open MPI installed.
set -euo pipefail
OUT=${1:?usage: deploy/bundle.sh OUT_DIR [BUILD_DIR]}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${2:-$ROOT/build}
[[ -d $BUILD/bin ]] || { echo "bundle.sh: $BUILD/bin is missing: run scripts/build.sh" >&2; exit 2; }
mkdir -p "$OUT/bin" "$OUT/lib"
# Executables and the tokenizer that travels beside them.
find "$BUILD/bin" -maxdepth 1 -type f -perm -u+x -exec cp -f {} "$OUT/bin/" \;
cp -f "$BUILD/bin/tokenizer.model" "$OUT/bin/"
# Every library they load, but the system's C runtime and what a GPU machine provides.
keep_out='^(linux-vdso|ld-linux|libc\.|libm\.|libpthread|libdl|librt|libstdc\+\+|libgcc_s|libcuda\.|libcudart|libcublas|libcublasLt|libnccl)'
for exe in "$OUT"/bin/*; do
  [[ $exe == *.model ]] && continue
  ldd "$exe" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}'
done | sort -u | while read -r name path; do
  [[ $name =~ $keep_out ]] || cp -fL "$path" "$OUT/lib/"
done
cat >"$OUT/run" <<'RUN'
#!/usr/bin/env bash
# Runs a bundled program with the bundled libraries first, then the machine's CUDA.
HERE=$(cd "$(dirname "$0")" && pwd)
CUDA_LIB=$(ls -d /usr/local/cuda/lib64 /usr/local/cuda-*/targets/x86_64-linux/lib 2>/dev/null | head -1)
export LD_LIBRARY_PATH="$HERE/lib${CUDA_LIB:+:$CUDA_LIB}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
prog=$1
shift
exec "$HERE/bin/$prog" "$@"
RUN
chmod +x "$OUT/run"
echo "bundle.sh: $(ls "$OUT/bin" | wc -l) programs, $(ls "$OUT/lib" | wc -l) libraries, $(du -sh "$OUT" | cut -f1) in $OUT"
