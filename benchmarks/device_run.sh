#!/usr/bin/env bash
# Runs on the GPU machine (see BENCHMARKS.md). The SmolLM2 GGUF (98 MB) travels in two halves under
# .carry/a and .carry/b (each call carries at most 64 MiB); wheels missing there travel under .whl.
#   stage1: install, stash half A, environment check, host-memory probe, factorization bench
#   stage2: join the GGUF, demo, dense bench, NIAH (values in pinned_host), test suite on the GPU box
#   tests, kernels, kernels2, decode: earlier kernel work (see BENCHMARKS.md)
#   tput: kernels compiled, throughput at Llama-3.1-8B shapes; tput2: GLM-4-9B shape; eval: accuracy on SmolLM2
#   diag, lin: where the weights' time went (bench_linear, hlo_traffic); agree: SmolLM2 kernels vs jnp;
#   cublas1-3: the Llama rows with cuBLAS decode GEMMs; overlap: the value fetch beside the GEMMs on a second stream
#   prof, prof2: kernel time per step (--profile) at 122,880 tokens; pipe1-7: micro-batched decode, its profile
#   in time, the after-ordered kernels, the same-session baselines; sel3: the landmark-score kernel (compiled
#   kernel tests, 8B-shape agreement, both methods at 122,880); pipe8: the kernels on a second XLA stream;
#   pipe9-11: H200 rows; pipe12: the latency-hiding scheduler;
#   pipe13: the streamed step's decode modules with buffer assignment; reuse1: emulated value reuse;
#   groups1: the micro-batched step with XLA scheduling groups; hold1: the kernels' prepared operands held
#   until the other micro-batch's kernel; prof3: where the held-operand and emulated-reuse steps spend their time;
#   split1-4: split values (some sequences' values on the GPU, the rest in pinned host memory)
#   dev1, tune1: the attention kernel's launch with device values, ShadowKV at its largest device batch;
#   mem1: the decode loop's temp with device values; dev2, lm1: ShadowKV with device values (device launch, no
#   reuse) vs full attention at both contexts; var1: variants of the device-values kernel and the landmark kernel
#   rope1, rope2: RoPE by angle addition and the landmark dot: compiled tests, kernel times, both methods at 122,880;
#   rope3: fp32 launches in one stage, the compiled tests again, both methods at 65,536; prof4: that step's profile;
#   rope4: two small fp32-exact RoPE tables: compiled tests, a launch sweep, ShadowKV at both contexts (slower: not kept);
#   rope5: the chunk-start table built from those two: compiled tests, the kernel, ShadowKV at both contexts;
#   sel4: the selection by log-probabilities (no faster: not kept), ShadowKV at both contexts;
#   sel5: the selection in one kernel and the combine without a segment copy: compiled tests, the selection's
#         paths, ShadowKV at 122,880 x 10 and its profile (the combine rewrite was slower: not kept);
#   sel6: the fused selection again (one pass per row, 16 warps): its tests, the paths, ShadowKV at 122,880 x 10;
#   pad7: no XLA pads before the landmark and attention kernels: compiled tests, both methods at both contexts;
#   launch8: a launch sweep of the attention kernel at 122,880 x 10 (no shape beats the default: kept);
#   prof9: the kept version on another machine: both methods at 122,880, ShadowKV under 80 GB, its profile;
#   bar10: the append ordered after the selection (no change: not kept): both methods at 122,880, the profile;
#   seg11: the exact segments read after the selection: both methods at 122,880, the ShadowKV profile
#   half12: the attention kernel without the rot(W) product: compiled tests, ShadowKV at 122,880 (and with the
#           appends ordered after the selection), full attention, a short launch sweep;
#   half13: the kept version: both methods at both contexts, ShadowKV under an 80 GB cap;
#   half14: 32- against 16-token blocks in the step, with profiles;
#   wonce15: W loaded once per program in a launch sweep, ShadowKV at both contexts with the fastest launch;
#   kept16: the kept launch: fp32 kernel tests, both methods at both contexts, the 80 GB cap, the profile;
#   exact17: the exact segments in the kernel's launch: tests, ShadowKV at both contexts (and the append after
#            the selection)
#   gap18: the kernel tests left uncompiled in exact17; the kept version's profile; 128 steps; while loops in
#          command buffers
#   gap19: each timed call's time, the profiled call's wall, 8 steps per call
#   timed20: both methods at both contexts with the corrected timing
#   order21: the exact segments' programs first, value loads before the reconstruction; 64-row exact blocks;
#            HBM read rate by several read-bound kernels
#   final22: the kept version: exact-segment tests, ShadowKV at both contexts, both methods under 80 GB
#   probe23: the HBM probe as the best of 30 runs, ShadowKV at 122,880 and full attention at 65,536 with it
#   once24: RoPE tables once, W in place, cos and sin once per step, the ternary threshold search: compiled tests,
#           ShadowKV at 122,880 x 10 with each change and without; exp26: the layer scan unrolled by 2, k's and v's
#           GEMMs after q's; once25: the kept version, both methods; once25b: full attention under 80 GB, the profile
#   sweep27: the attention kernel's launch with 1 or 2 pipeline stages, ShadowKV with the fastest; mend28: the
#           review's cached RoPE tables, compiled tests and ShadowKV at 122,880 x 10
#   chain29: the threshold search's early stop and the attention chains: compiled tests, the selection with and
#           without the early stop, ShadowKV at 122,880 x 10 with 1 and 2 chains (profiled)
#   pad30: the decode rows padded to a multiple of 8, on and off; a launch sweep with 128-token blocks
#   final31a, final31b: the attention chains launched in order against one chain, then both methods at both
#           contexts and under an 80 GB cap (CH=N chains for final31b); kept32: the kept version's compiled tests
#           and profiled step; anat33: the three attention kernels' hardware counters (ncu);
#   anat34: the attention kernel's launches (ncu, loop), the landmark kernel's loop, ShadowKV with the fastest;
#   anat35: chunk ids a block ahead (attention), reloaded under the mask (selection): tests, A/B, ShadowKV;
#   final36a, final36b: the kept version's compiled tests, both methods at 122,880, ShadowKV at 65,536 and 80 GB,
#           the profiled step; anat37: the kept selection and attention kernels under ncu;
#   sel38: the selection's packed prefix sum and vector loads of padded score rows, with and without
#   exact39: one program for all the exact segments (against one each): compiled tests, the kernel with the step's
#           segments in a launch sweep, ShadowKV at 122,880 x 10 with and without
#   cb40: the decode loop's command buffers scheduled CONCURRENT (kept), LHS and SERIALIZE: ShadowKV at 122,880 x 10
#   qpre41: q rotated by the landmark kernel (not kept), the attention kernel's last split without padding blocks
#           (kept): compiled tests, ShadowKV at 122,880 x 10 with both, and with each alone
#   hit42: the kept version's profiled step; ShadowKV without the per-layer hit rate, with 10 and 15 splits
#   grp43: the layer scan over groups of 2 layers against 1: ShadowKV at 122,880 x 10, full attention at 122,880 x 6
#   mem44a, mem44b: the batch built with the prompt's values staged in host RAM (one more ShadowKV row fits): both
#           methods at their largest batch at 122,880 under an H100's allocator limit (76.8 GiB) and on the whole
#           H200, ShadowKV at 65,536
#   sel45: the selection kernel's exp as exp2 and one divide a row, with and without: tests, bench_select, ShadowKV
#   spl46: the attention kernel's splits at 122,880 x 5 (8, 15, 10, 4) and 65,536 x 20 (8, 4)
#   ul48: the decode step over per-layer weight arrays (no layer scan) against the layer scan, under an H100's memory
#   wav49: the attention kernel's launches at 122,880 x 5 and x 10 (one or two programs per SM), the selection's warps
#          at x 5
#   sta50: ShadowKV at 122,880 x 5 with the attention kernel in 2 pipeline stages, in 5 splits, and as kept
#   row51: decode rows padded to a multiple of 16, not 8 (cuBLAS' split-K GEMMs at 8 rows): ShadowKV at 122,880 x 5
#          with and without, full attention under 76.8 GiB (3 rows), ShadowKV at 65,536 x 20
#   fin52: the HBM probe's spread between processes, single calls cold against 8 queued calls after a warm-up; the
#          kept code (16-row padding, the new probe): both methods at 122,880 under 76.8 GiB, ShadowKV on the whole GPU
#   fin53: the kept code's ShadowKV rows at 65,536 tokens (under 76.8 GiB, whole GPU) with the new probe
#   rad54: the threshold search two bits a pass from the shared top bits (slower: not kept): compiled tests,
#          bench_select, ShadowKV at 122,880 x 5
#   l32_55: the device-values attention launch with 32-token blocks, 15 splits, 2 or 3 stages, in the step at x 5
#   sps56: the split selection (each row over several programs, softmax statistics from the landmark kernel; not
#          kept): compiled tests, bench_select at 122,880 x 5 and x 10, ShadowKV at 122,880 x 5 and x 10 with and
#          without. Ran on commit dcfe7c2 (statistics reduced per block, split at any batch under 128 rows)
#   sps57: the split selection below 64 rows, the landmark kernel's statistics per lane
#          (not kept then, kept since h100d; ran with it as a patch): compiled tests, bench_select at 122,880 x 5,
#          ShadowKV at 122,880 x 5 without, with, without, with (profiled)
#   l2p58: the layer's output projection read into L2 beside the selection (benchmarks/patches/l2_prefetch.patch):
#          a compiled check of the prefetch kernel, ShadowKV at 122,880 x 5 without, with, without, with (profiled), x 10
#   spl47: splits of 4 blocks or more (kept): compiled tests, ShadowKV at 65,536 x 20, both methods at 65,536 under
#           76.8 GiB
#   h100a, h100b, h100c: the acceptance rows on an H100 80 GB (the first lent since 2026-11-27): a: the GPU, both
#           methods at 122,880 at each one's largest batch (ShadowKV profiled); b: both at 65,536, ours and PyTorch's
#           full attention at 32,768 x 4; c: the compiled kernel tests, ShadowKV at 122,880 again with its breakdown;
#           d: the split selection (kept since) on the H100: its compiled tests, ShadowKV at 122,880 x 5 without,
#           with, without, with
# Calls that use the GGUF run after a call that stashed half A, within the machine's 30 s idle window.
set -uo pipefail
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT" /root/m
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
export PYTHONPATH=/tmp/site:$PWD
# editable install so that kernels/ imports as shadowkv_jax.kernels (as on any installed checkout)
python3 -c "import shadowkv_jax.kernels" 2>/dev/null || \
  python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . >/dev/null 2>&1
GGUF=/root/m/smollm2.gguf
# throughput runs: most of the GPU for XLA, reserved at start as one region (grown on demand, XLA's allocator
# keeps each freed region, e.g. compile-time autotuning scratch, and a 22.5 GiB cache array then found no
# room), pinned host memory up to 110 GiB (XLA caps it at 64 otherwise)
bench() { XLA_PYTHON_CLIENT_PREALLOCATE=true XLA_PYTHON_CLIENT_MEM_FRACTION=0.97 XLA_PJRT_GPU_HOST_MEMORY_LIMIT_GB=110 timeout ${BENCH_TIMEOUT:-280} \
  python3 -m shadowkv_jax bench --margin 0.03 --timed-calls ${CALLS:-3} "$@" 2>&1 | grep -v -i "deprecat\|warn\|^W1\|stack_frame" | tail -${BTAIL:-14}; }
# the Llama-3.1-8B rows since the eleventh session: ShadowKV with every value on the GPU and no value reuse, and
# full attention at its largest batch
sk_device() { bench --model llama-3.1-8b --method shadowkv --steps 32 --value-placement device --no-value-reuse "$@"; }
full_auto() { bench --model llama-3.1-8b --method full --batch auto --steps 32 "$@"; }
both_methods() {  # both methods at both contexts in one call, then ShadowKV with the GPU capped at 80 GB
  BENCH_TIMEOUT=120 BTAIL=3 sk_device --context 122880 --batch auto --json "$OUT/tput_llama_122880_shadowkv_device.json"
  BENCH_TIMEOUT=130 BTAIL=3 full_auto --context 122880 --json "$OUT/tput_llama_122880_full.json"
  BENCH_TIMEOUT=110 BTAIL=3 sk_device --context 65536 --batch auto --json "$OUT/tput_llama_65536_shadowkv_device.json"
  BENCH_TIMEOUT=110 BTAIL=3 full_auto --context 65536 --json "$OUT/tput_llama_65536_full.json"
  BENCH_TIMEOUT=100 BTAIL=3 sk_device --context 122880 --batch auto --gpu-memory-gb 80 \
      --json "$OUT/tput_llama_122880_shadowkv_device_80gb.json"
}
export SHADOWKV_JAX_MODEL=$GGUF
# XLA_FLAGS="--xla_dump_to=DIR $DUMP_DECODE": the decode loop's HLO as text (with its buffer assignment)
DUMP_DECODE="--xla_dump_hlo_module_re=.*decode_loop.* --xla_dump_hlo_as_text"
case "${1:-}" in
stage1)
  cp .carry/a/smol.part00 /root/m/
  nvidia-smi -L; python3 -c "import jax, flax, orbax.checkpoint as o; print('jax', jax.__version__, jax.devices(), 'flax', flax.__version__)"
  python3 benchmarks/host_memory_probe.py --json "$OUT/probe.json" 2>&1 | grep -v Traceback | tail -20
  [ -n "${FACT:-}" ] && python3 benchmarks/bench_factorization.py --tokens 32768 --dims 1024 --rank 160 \
      --json "$OUT/factorization_gpu.json"
  ;;
stage2)
  cat /root/m/smol.part00 .carry/b/smol.part01 > $GGUF
  (cd /root/m && sed "s#  .*#  $GGUF#" "$OLDPWD/.carry/b/md5" | md5sum -c -) || exit 1
  python3 -m shadowkv_jax generate --prompt "What is the capital of France?" --json | tee "$OUT/demo.json"
  [ -n "${BENCH:-}" ] && python3 benchmarks/bench_dense.py --context 2048 --batch 1 8 --dtype float32 bfloat16 \
      --decode-steps 128 --repeats 5 --json "$OUT/bench_dense_gpu.json" | tail -8
  python3 benchmarks/niah_run.py --lengths 4096 7168 --placement host --json "$OUT/niah_gpu.json" | tail -8
  ;;
tests)  # the CPU suite on this machine's JAX (CPU platform), then the slow checks on the GPU
  [ -f $GGUF ] || cat /root/m/smol.part00 .carry/b/smol.part01 > $GGUF
  JAX_PLATFORMS=cpu timeout ${CPU_TIMEOUT:-300} python3 -m pytest -q -p no:cacheprovider tests 2>&1 | tail -6
  timeout ${GPU_TIMEOUT:-200} python3 -m pytest -q -p no:cacheprovider -m slow -s tests 2>&1 | tail -12
  ;;
kernels)  # compiled kernel tests, kernel roofline sweep, decode with kernels vs jnp
  [ -f $GGUF ] || cat /root/m/smol.part00 .carry/b/smol.part01 > $GGUF
  SHADOWKV_KERNELS_COMPILED=1 python3 -m pytest -q -p no:cacheprovider tests/test_kernels.py 2>&1 | tail -4
  python3 benchmarks/bench_kernels.py ${KARGS:-} --json "$OUT/kernels_h100.json" 2>&1 | grep -v stack_frame | tail -${KTAIL:-24}
  [ -n "${SWEEP:-}" ] && python3 benchmarks/bench_kernels.py --contexts 131072 --batches 8 --placements device \
      --splits 4 16 --block-tokens 32 128 --warps 4 8 --json "$OUT/kernels_sweep_h100.json" 2>&1 | tail -11
  ;;
decode)
  [ -f $GGUF ] || cat /root/m/smol.part00 .carry/b/smol.part01 > $GGUF
  python3 benchmarks/bench_shadowkv_decode.py --model smollm2 --context 4096 --batch 4 --json "$OUT/decode_smollm2.json" 2>&1 | tail -1
  python3 benchmarks/bench_shadowkv_decode.py --model llama-3.1-8b --context 32768 --batch 2 --json "$OUT/decode_llama8b.json" 2>&1 | tail -1
  ;;
kernels2)  # compiled kernel tests, a small tuning sweep, the roofline table, 8B decode kernels vs jnp
  SHADOWKV_KERNELS_COMPILED=1 timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_kernels.py 2>&1 | tail -4
  timeout 100 python3 benchmarks/bench_kernels.py --contexts 131072 --batches 8 --placements device --splits 4 8 \
      --block-tokens 16 32 --warps 8 --repeats 10 --json "$OUT/kernels_sweep_h100.json" 2>&1 | tail -5
  timeout 160 python3 benchmarks/bench_kernels.py --repeats 10 --json "$OUT/kernels_h100.json" 2>&1 | tail -18
  timeout 150 python3 benchmarks/bench_shadowkv_decode.py --model llama-3.1-8b --context 32768 --batch 2 \
      --json "$OUT/decode_llama8b.json" 2>&1 | tail -1
  ;;
tput)  # stash GGUF half A; compiled kernel tests; planned temp memory of the full path; where the weights'
       # share goes; Llama-3.1-8B shape at each method's largest batch at 122,880 and 65,536 tokens
  cp .carry/a/smol.part00 /root/m/
  SHADOWKV_KERNELS_COMPILED=1 timeout 130 python3 -m pytest -q -p no:cacheprovider --tb=line tests/test_kernels.py 2>&1 \
      | grep -E "passed|failed|Error" | tail -6
  BENCH_TIMEOUT=200 BTAIL=4 bench --model llama-3.1-8b --context 122880 --method shadowkv --batch auto --steps 32 \
      --breakdown --json "$OUT/tput_llama_122k_shadowkv.json"
  BENCH_TIMEOUT=100 BTAIL=4 bench --model llama-3.1-8b --context 122880 --method full --batch auto --steps 32 \
      --breakdown --json "$OUT/tput_llama_122k_full.json"
  BENCH_TIMEOUT=80 BTAIL=3 full_auto --context 65536 \
      --json "$OUT/tput_llama_64k_full.json"
  ;;
tput3)  # the full-attention rows again (the row prefill no longer copies the cache) and ShadowKV at 65,536
  [ -n "${MEM:-}" ] && timeout 90 python3 benchmarks/compile_memory.py --context 122880 --batch 3 2>&1 | grep GiB
  [ -n "${KTESTS:-}" ] && SHADOWKV_KERNELS_COMPILED=1 timeout 200 python3 -m pytest -q -p no:cacheprovider --tb=line \
      tests/test_kernels.py > "$OUT/kernel_tests_h100.txt" 2>&1; tail -3 "$OUT/kernel_tests_h100.txt"
  BENCH_TIMEOUT=150 BTAIL=4 bench --model llama-3.1-8b --context 122880 --method full --batch auto --steps 32 \
      --breakdown --json "$OUT/tput_llama_122k_full.json"
  BENCH_TIMEOUT=100 BTAIL=4 full_auto --context 65536 \
      --json "$OUT/tput_llama_64k_full.json"
  [ -n "${GLM_FULL:-}" ] && BENCH_TIMEOUT=250 BTAIL=6 bench --model glm-4-9b --context 65536 122880 --method full \
      --batch auto --steps 32 --json "$OUT/tput_glm_full.json"
  [ -z "${NO_SK:-}" ] && BENCH_TIMEOUT=230 BTAIL=4 bench --model llama-3.1-8b --context 65536 --method shadowkv --batch auto --steps 32 \
      --breakdown --json "$OUT/tput_llama_64k_shadowkv.json"
  ;;
sel)  # compiled kernel tests (top-k kernel included); selection XLA vs Pallas; 8B decode agreement; Llama
       # ShadowKV at 122,880 with the faster top-k
  SHADOWKV_KERNELS_COMPILED=1 timeout 150 python3 -m pytest -q -p no:cacheprovider --tb=line tests/test_kernels.py \
      > "$OUT/kernel_tests_h100.txt" 2>&1; tail -2 "$OUT/kernel_tests_h100.txt"
  (cd benchmarks && timeout 60 python3 bench_select.py --batch 14 --context 122880 --json "$OUT/select_h100.json" \
      2>&1 | tail -5)
  TOPK=$(python3 -c "import json; m=json.load(open('$OUT/select_h100.json'))['ms_per_layer']; \
print('pallas' if m['select_pallas'] < m['select_xla'] else 'xla')" 2>/dev/null || echo xla)
  timeout 130 python3 benchmarks/bench_shadowkv_decode.py --model llama-3.1-8b --context 32768 --batch 2 \
      --json "$OUT/decode_llama8b.json" 2>&1 | tail -2
  BENCH_TIMEOUT=230 BTAIL=4 bench --model llama-3.1-8b --context 122880 --method shadowkv --batch auto --steps 32 \
      --top-k $TOPK --breakdown --json "$OUT/tput_llama_122k_shadowkv.json"
  ;;
sel2)  # top-k kernel held in registers; fused kernel in a compiled loop at 128K; Llama ShadowKV at 122,880
  SHADOWKV_KERNELS_COMPILED=1 timeout 60 python3 -m pytest -q -p no:cacheprovider --tb=line tests/test_kernels.py \
      -k top_k 2>&1 | tail -1
  (cd benchmarks && timeout 60 python3 bench_select.py --batch 13 --context 122880 --json "$OUT/select_h100.json" \
      2>&1 | tail -5)
  timeout 120 python3 benchmarks/bench_kernels.py --contexts 131072 --batches 8 16 --repeats 10 --in-loop 32 \
      --json "$OUT/kernels_h100.json" 2>&1 | tail -9
  BENCH_TIMEOUT=230 BTAIL=4 bench --model llama-3.1-8b --context 122880 --method shadowkv --batch auto --steps 32 \
      --top-k pallas --breakdown --json "$OUT/tput_llama_122k_shadowkv.json"
  ;;
last)  # 8B decode agreement with exact fp32 products in the jnp path; Llama ShadowKV at 65,536 with the top-k kernel
  JAX_DEFAULT_MATMUL_PRECISION=highest timeout 130 python3 benchmarks/bench_shadowkv_decode.py --model llama-3.1-8b \
      --context 32768 --batch 2 --steps 16 --json "$OUT/decode_llama8b_highest.json" 2>&1 | tail -2
  BENCH_TIMEOUT=230 BTAIL=4 bench --model llama-3.1-8b --context 65536 --method shadowkv --batch auto --steps 32 \
      --top-k pallas --breakdown --json "$OUT/tput_llama_64k_shadowkv.json"
  ;;
glmsk)  # GLM-4-9B shape, ShadowKV at both contexts
  XLA_PYTHON_CLIENT_MEM_FRACTION=0.97 XLA_PJRT_GPU_HOST_MEMORY_LIMIT_GB=110 timeout 150 python3 \
      benchmarks/check_donation.py --flow-context 122880 --batch 3 --block-slots 122880 2>&1 | grep -i "place\|fail\|GiB"
  BENCH_TIMEOUT=400 BTAIL=6 bench --model glm-4-9b --context 65536 122880 --method shadowkv --batch auto --steps 32 \
      --breakdown --json "$OUT/tput_glm_shadowkv.json"
  ;;
tput2)  # GLM-4-9B shape at both contexts; Llama-3.1-8B decode, kernels vs jnp; the weights' share (no GGUF needed)
  (cd benchmarks && timeout 90 python3 bench_linear.py --batch 1 4 --json "$OUT/linear_h100.json" 2>&1 | tail -8)
  # XLA's dynamic-slice fusion lets cuBLAS read a layer's weights in place inside the layer scan
  (cd benchmarks && XLA_FLAGS=--xla_gpu_enable_dynamic_slice_fusion=true timeout 90 python3 bench_linear.py \
      --batch 1 4 --json "$OUT/linear_dsf_h100.json" 2>&1 | tail -8)
  BTAIL=7 bench --model glm-4-9b --context 65536 122880 --method full shadowkv --batch auto --steps 32 \
      --json "$OUT/tput_glm.json"
  timeout 120 python3 benchmarks/bench_shadowkv_decode.py --model llama-3.1-8b --context 32768 --batch 2 \
      --json "$OUT/decode_llama8b.json" 2>&1 | tail -1
  ;;
diag)  # stash GGUF half A; where the weights' and selection's extra time goes: the weights alone with and
       # without XLA's dynamic-slice fusion; the large slices and copies in the compiled decode loops
  cp .carry/a/smol.part00 /root/m/
  DSF=--xla_gpu_enable_dynamic_slice_fusion=true
  (cd benchmarks && timeout 150 python3 bench_linear.py --batch 3 13 --json "$OUT/linear_h100.json" 2>&1 | tail -7)
  (cd benchmarks && XLA_FLAGS=$DSF timeout 150 python3 bench_linear.py --batch 3 13 --json "$OUT/linear_dsf_h100.json" \
      2>&1 | tail -7)
  for mb in "full 3" "shadowkv 13"; do set -- $mb
    (cd benchmarks && timeout 100 python3 hlo_traffic.py --method $1 --batch $2 --json "$OUT/hlo_$1.json" 2>&1 \
        | grep -v -i "warn" | head -14)
    (cd benchmarks && XLA_FLAGS=$DSF timeout 100 python3 hlo_traffic.py --method $1 --batch $2 \
        --json "$OUT/hlo_$1_dsf.json" 2>&1 | grep "^total")
  done
  ;;
agree)  # join the GGUF; SmolLM2 decode, kernels (top-k kernel included) vs jnp; the 8B shape in fp32
  cat /root/m/smol.part00 .carry/b/smol.part01 > $GGUF
  (cd /root/m && sed "s#  .*#  $GGUF#" "$OLDPWD/.carry/b/md5" | md5sum -c -) || exit 1
  timeout 100 python3 benchmarks/bench_shadowkv_decode.py --model smollm2 --context 4096 --batch 4 \
      --json "$OUT/decode_smollm2.json" 2>&1 | tail -2
  timeout 240 python3 benchmarks/bench_shadowkv_decode.py --model llama-3.1-8b --dtype float32 --context 32768 \
      --batch 2 --steps 16 --json "$OUT/decode_llama8b_fp32.json" 2>&1 | tail -2
  [ -n "${FULL:-}" ] && BENCH_TIMEOUT=150 BTAIL=4 bench --model llama-3.1-8b --context 122880 --method full \
      --batch auto --steps 32 --breakdown --json "$OUT/tput_llama_122k_full.json"
  ;;
lin)  # the weights alone at batch 13 under XLA flag sets (HLO of each variant kept); the slices left in the
      # ShadowKV loop under them; the 8B-shape decode agreement in fp32
  for flags in "" "--xla_gpu_enable_triton_gemm=false" \
      "--xla_gpu_enable_triton_gemm=false --xla_gpu_enable_dynamic_slice_fusion=true"; do
    echo "XLA_FLAGS=$flags"; tag=$(echo "$flags" | tr -dc 'a-z' | tail -c 20)
    (cd benchmarks && XLA_FLAGS="$flags" timeout 100 python3 bench_linear.py --batch 13 --steps 16 \
        --json "$OUT/linear_${tag:-default}.json" --hlo /root/hlo_${tag:-default} 2>&1 | tail -3)
    [ -n "$flags" ] && (cd benchmarks && XLA_FLAGS="$flags" timeout 100 python3 hlo_traffic.py --method shadowkv \
        --batch 13 --json "$OUT/hlo_shadowkv_$tag.json" 2>&1 | grep "dynamic-slice\|^total")
  done
  tar czf "$OUT/linear_hlo.tgz" -C /root $(cd /root && ls -d hlo_*)
  timeout 200 python3 benchmarks/bench_shadowkv_decode.py --model llama-3.1-8b --dtype float32 --context 16384 \
      --batch 2 --steps 16 --json "$OUT/decode_llama8b_fp32.json" 2>&1 | tail -2
  ;;
cublas1)  # decode compiled with cuBLAS GEMMs (DECODE_COMPILER_OPTIONS): the weights alone; 8B-shape agreement in
          # fp32 with exact products (kernel error vs TF32 in the jnp path); full attention at 122,880
  (cd benchmarks && timeout 150 python3 bench_linear.py --batch 3 13 --steps 16 --json "$OUT/linear_h100.json" 2>&1 \
      | tail -9)
  JAX_DEFAULT_MATMUL_PRECISION=highest timeout 150 python3 benchmarks/bench_shadowkv_decode.py --model llama-3.1-8b \
      --dtype float32 --context 16384 --batch 2 --steps 16 --json "$OUT/decode_llama8b_fp32_highest.json" 2>&1 | tail -2
  BENCH_TIMEOUT=200 BTAIL=4 bench --model llama-3.1-8b --context 122880 --method full --batch auto --steps 32 \
      --breakdown --json "$OUT/tput_llama_122k_full.json"
  ;;
cublas2)  # ShadowKV at 122,880 with cuBLAS decode GEMMs
  BENCH_TIMEOUT=330 BTAIL=4 bench --model llama-3.1-8b --context 122880 --method shadowkv --batch auto --steps 32 \
      --breakdown --json "$OUT/tput_llama_122k_shadowkv.json"
  ;;
cublas3)  # 8B-shape agreement in fp32 with exact products (shorter than cublas1's, which ran out of time); both
          # methods at 65,536 with cuBLAS decode GEMMs
  JAX_DEFAULT_MATMUL_PRECISION=highest timeout 170 python3 benchmarks/bench_shadowkv_decode.py --model llama-3.1-8b \
      --dtype float32 --context 8192 --batch 2 --steps 8 --json "$OUT/decode_llama8b_fp32_highest.json" 2>&1 \
      | grep "^|"
  BENCH_TIMEOUT=120 BTAIL=3 bench --model llama-3.1-8b --context 65536 --method full --batch auto --steps 32 \
      --breakdown --json "$OUT/tput_llama_64k_full.json"
  BENCH_TIMEOUT=260 BTAIL=3 bench --model llama-3.1-8b --context 65536 --method shadowkv --batch auto --steps 32 \
      --breakdown --json "$OUT/tput_llama_64k_shadowkv.json"
  ;;
eval)  # join the GGUF; RULER-style accuracy; rank / chunk-size sweeps; SmolLM2 decode, kernels vs jnp
  cat /root/m/smol.part00 .carry/b/smol.part01 > $GGUF
  (cd /root/m && sed "s#  .*#  $GGUF#" "$OLDPWD/.carry/b/md5" | md5sum -c -) || exit 1
  timeout 300 python3 -m shadowkv_jax eval ruler --lengths 4096 7680 --samples 20 --batch-size 20 \
      --haystack ${HAYSTACK:-noise} --tasks ${TASKS:-niah_single niah_multikey niah_multivalue niah_multiquery vt cwe fwe} \
      --json "$OUT/ruler_h100.json" 2>&1 | grep -v -i "warn" | tail -22
  [ -n "${SWEEPS:-}" ] && timeout 220 python3 benchmarks/eval_sweeps.py --length 4096 --samples 8 --tasks niah_single \
      niah_multikey niah_multivalue --ranks 8 16 32 48 96 192 --chunk-sizes 4 8 16 32 --batch-size 24 \
      --json "$OUT/eval_sweeps_h100.json" --plot "$OUT/eval_sweeps_h100.png" 2>&1 | grep -v -i "warn" | tail -14
  timeout 60 python3 benchmarks/bench_shadowkv_decode.py --model smollm2 --context 4096 --batch 4 \
      --json "$OUT/decode_smollm2.json" 2>&1 | tail -1
  timeout 130 python3 benchmarks/torch_baseline.py --shape llama-3.1-8b --context 32768 --batch 4 --steps 32 \
      --warmup 4 --compile both --json "$OUT/torch_llama_32k_b4.json" 2>&1 | tail -5
  ;;
overlap)  # can the value fetch (PCIe) overlap the weights' GEMMs (HBM) on a second stream?
  o() { timeout ${OVL_TIMEOUT:-150} python3 benchmarks/bench_overlap.py ${OARGS:-} "$@" 2>&1 \
      | grep -v -i "deprecat\|^W1\|stack_frame\|^{\|^[a-z_]* [0-9.]* ms$" | tail -6; }
  o --no-inner-jit --json "$OUT/overlap_scan_h100.json"
  o --no-inner-jit --python-loop --json "$OUT/overlap_unrolled_h100.json"
  ;;
conc)  # the same probe with the command buffers' graph nodes left concurrent where no data orders them
  XLA_FLAGS=--xla_gpu_command_buffer_scheduling_mode=CONCURRENT timeout 200 python3 benchmarks/bench_overlap.py \
      --kinds attention weights serial --splits 1 4 --warps 8 --json "$OUT/overlap_concurrent_h100.json" 2>&1 \
      | grep -v -i "deprecat\|^W1\|stack_frame\|^{" | tail -8
  timeout 120 python3 benchmarks/bench_overlap.py --kinds attention weights serial --splits 1 --warps 8 \
      --json "$OUT/overlap_lhs_h100.json" 2>&1 | grep -v -i "deprecat\|^W1\|stack_frame\|^{" | tail -4
  ;;
pipe1)  # micro-batched decode: compiled kernel tests (value_row), the pipelined step against the plain one (values
  # in pinned host memory); ShadowKV at 122,880 with two interleaved micro-batches (decode options now leave
  # command-buffer kernels concurrent)
  SHADOWKV_KERNELS_COMPILED=1 timeout 150 python3 -m pytest -q -p no:cacheprovider --tb=short tests/test_kernels.py 2>&1 \
      | grep -E "passed|failed|Error|assert" | tail -8
  timeout 200 python3 -m pytest -q -p no:cacheprovider --tb=short tests/test_pipeline.py 2>&1 \
      | grep -E "passed|failed|Error|assert" | tail -8
  BENCH_TIMEOUT=300 BTAIL=16 bench --model llama-3.1-8b --context 122880 --method shadowkv --batch auto --steps 32 \
      --micro-batches 2 --profile --json "$OUT/prof_llama_122k_shadowkv_mb2.json"
  ;;
pipe3)  # after the loop-counter fix: compiled kernel tests, pipelined vs plain step (max |dlogit| printed),
  # ShadowKV at 122,880 with two micro-batches (profiled), full attention with the same decode options
  SHADOWKV_KERNELS_COMPILED=1 timeout 150 python3 -m pytest -q -p no:cacheprovider --tb=line tests/test_kernels.py 2>&1 \
      | grep -E "passed|failed" | tail -3
  timeout 150 python3 -m pytest -q -s -p no:cacheprovider --tb=line tests/test_pipeline.py 2>&1 \
      | grep -E "passed|failed|dlogit|Error" | tail -8
  BENCH_TIMEOUT=250 BTAIL=20 bench --model llama-3.1-8b --context 122880 --method shadowkv --batch auto --steps 32 \
      --micro-batches 2 --profile --json "$OUT/prof_llama_122k_shadowkv_mb2.json"
  BENCH_TIMEOUT=130 BTAIL=4 full_auto --context 122880 \
      --json "$OUT/tput_llama_122k_full_concurrent.json"
  ;;
pipe5)  # where the micro-batched step's time goes in time (profile concurrency: idle gaps, kernels side by side);
  # the probe's two skewed chains; the plain step without XLA's dot merger (no per-step wq|wk|wv concatenation)
  XLA_FLAGS=--xla_gpu_command_buffer_scheduling_mode=CONCURRENT timeout 150 python3 benchmarks/bench_overlap.py \
    --kinds attention weights serial pipelined --splits 1 --warps 8 --json "$OUT/overlap_pipelined_h100.json" 2>&1 \
    | grep -v -i "deprecat\|^W1\|stack_frame\|^{" | tail -3
  XLA_FLAGS="--xla_dump_to=/tmp/dump $DUMP_DECODE" \
    BENCH_TIMEOUT=240 BTAIL=18 bench --model llama-3.1-8b --context 122880 --method shadowkv --batch auto --steps 8 \
      --micro-batches 2 --profile --json "$OUT/prof_llama_122k_shadowkv_mb2_time.json"
  (cd /tmp/dump && tar czf "$OUT/dump_mb2.tgz" $(ls | grep -E "after_optimizations(-buffer-assignment)?\.txt$" | head -6))
  XLA_FLAGS=--xla_disable_hlo_passes=dot-merger BENCH_TIMEOUT=200 BTAIL=18 bench --model llama-3.1-8b --context 122880 \
      --method shadowkv --batch auto --steps 8 --profile --json "$OUT/prof_llama_122k_shadowkv_nomerge.json"
  ;;
pipe6)  # the kernel's `after` operand, compiled; the micro-batched step with 1 split and ordered kernels
  SHADOWKV_KERNELS_COMPILED=1 timeout 150 python3 -m pytest -q -p no:cacheprovider --tb=short tests/test_kernels.py \
      tests/test_pipeline.py 2>&1 | grep -E "passed|failed|Error|assert" | tail -8
  timeout 120 python3 benchmarks/bench_overlap.py --kinds attention weights pipelined pipelined_ordered --splits 1 \
    --warps 8 --json "$OUT/overlap_ordered_h100.json" 2>&1 | grep -v -i "deprecat\|^W1\|stack_frame\|^{" | tail -3
  BENCH_TIMEOUT=260 BTAIL=16 bench --model llama-3.1-8b --context 122880 --method shadowkv --batch auto --steps 32 \
      --micro-batches 2 --profile --json "$OUT/prof_llama_122k_shadowkv_mb2_ordered.json"
  ;;
pipe7)  # the same session's baselines at 122,880: one-batch ShadowKV and full attention (dot merger off)
  BENCH_TIMEOUT=250 BTAIL=4 bench --model llama-3.1-8b --context 122880 --method shadowkv --batch auto --steps 32 \
      --json "$OUT/tput_llama_122k_shadowkv_nomerge.json"
  BENCH_TIMEOUT=160 BTAIL=4 full_auto --context 122880 \
      --json "$OUT/tput_llama_122k_full_nomerge.json"
  ;;
pipe8)  # the attention kernels as calls on a second XLA stream (compute_on gpu_stream:1): compiled pipeline
  # tests, then the micro-batched step at 122,880 with its profile in time and the decode module's dump
  SHADOWKV_KERNELS_COMPILED=1 timeout 200 python3 -m pytest -q -p no:cacheprovider --tb=short tests/test_pipeline.py \
      tests/test_kernels.py -k "micro or after_and_stream" \
      2>&1 | tee "$OUT/pipeline_tests.txt" | grep -E "passed|failed|Error|assert" | tail -8
  XLA_FLAGS="--xla_dump_to=/tmp/dump $DUMP_DECODE" \
    BENCH_TIMEOUT=300 BTAIL=18 bench --model llama-3.1-8b --context 122880 --method shadowkv --batch auto \
      --steps 16 --micro-batches 2 --value-stream 1 --profile --json "$OUT/prof_llama_122k_shadowkv_mb2_stream.json"
  (cd /tmp/dump && tar czf "$OUT/dump_mb2_stream.tgz" $(ls | grep -E "after_optimizations\.txt$" | head -3))
  ;;
pipe9)  # H200 rows at 122,880: the streamed micro-batched step with 2 kernel splits, one-batch ShadowKV, full
  BENCH_TIMEOUT=200 BTAIL=3 bench --model llama-3.1-8b --context 122880 --method shadowkv --batch auto --steps 32 \
      --micro-batches 2 --value-stream 1 --kernel-splits 2 --json "$OUT/tput_llama_122k_shadowkv_mb2_stream_s2.json"
  BENCH_TIMEOUT=200 BTAIL=3 bench --model llama-3.1-8b --context 122880 --method shadowkv --batch auto --steps 32 \
      --json "$OUT/tput_llama_122k_shadowkv.json"
  BENCH_TIMEOUT=150 BTAIL=3 full_auto --context 122880 \
      --json "$OUT/tput_llama_122k_full.json"
  ;;
pipe10)  # H200: full attention in an H100's 80 GB at 122,880; both methods at 65,536
  BENCH_TIMEOUT=150 BTAIL=3 bench --model llama-3.1-8b --context 122880 --method full --batch auto --steps 32 \
      --gpu-memory-gb 80 --json "$OUT/tput_llama_122k_full_80gb.json"
  BENCH_TIMEOUT=200 BTAIL=3 bench --model llama-3.1-8b --context 65536 --method shadowkv --batch auto --steps 32 \
      --micro-batches 2 --value-stream 1 --json "$OUT/tput_llama_64k_shadowkv_mb2_stream.json"
  BENCH_TIMEOUT=150 BTAIL=3 full_auto --context 65536 \
      --json "$OUT/tput_llama_64k_full.json"
  ;;
pipe11)  # H200 at 65,536: the streamed micro-batched step's profile in time; one-batch ShadowKV
  BENCH_TIMEOUT=220 BTAIL=8 bench --model llama-3.1-8b --context 65536 --method shadowkv --batch auto --steps 8 \
      --micro-batches 2 --value-stream 1 --profile --json "$OUT/prof_llama_64k_shadowkv_mb2_stream.json"
  BENCH_TIMEOUT=200 BTAIL=3 bench --model llama-3.1-8b --context 65536 --method shadowkv --batch auto --steps 32 \
      --json "$OUT/tput_llama_64k_shadowkv.json"
  ;;
pipe12)  # the streamed micro-batched step under XLA's latency-hiding scheduler (tried for placing each kernel
  # call's done late; it did not: BENCHMARKS.md), at 65,536 and 122,880
  LHS="--xla_gpu_enable_latency_hiding_scheduler=true"
  XLA_FLAGS="$LHS" BENCH_TIMEOUT=200 BTAIL=3 bench --model llama-3.1-8b --context 65536 --method shadowkv --batch auto \
      --steps 32 --micro-batches 2 --value-stream 1 --json "$OUT/tput_llama_64k_shadowkv_mb2_stream_lhs.json"
  XLA_FLAGS="$LHS --xla_dump_to=/tmp/dump12 $DUMP_DECODE" \
    BENCH_TIMEOUT=200 BTAIL=3 bench --model llama-3.1-8b --context 122880 --method shadowkv --batch auto \
      --steps 32 --micro-batches 2 --value-stream 1 --json "$OUT/tput_llama_122k_shadowkv_mb2_stream_lhs.json"
  (cd /tmp/dump12 && tar czf "$OUT/dump_mb2_stream_lhs.tgz" $(ls | grep -E "after_optimizations\.txt$" | head -1))
  ;;
pipe13)  # the streamed micro-batched decode module with its buffer assignment at 65,536 and 122,880 (compiled,
  # then stopped: the dump is written at compile time) for benchmarks/command_buffer_deps.py
  for ctx in 65536 122880; do
    XLA_FLAGS="--xla_dump_to=/tmp/d$ctx $DUMP_DECODE" \
      BENCH_TIMEOUT=${DUMP_TIMEOUT:-50} BTAIL=2 bench --model llama-3.1-8b --context $ctx --method shadowkv \
        --batch auto --steps 4 --micro-batches 2 --value-stream 1
    (cd /tmp/d$ctx && tar czf "$OUT/dump_mb2_stream_$ctx.tgz" \
      $(ls | grep -E "decode_loop.*after_optimizations(-buffer-assignment)?\.txt$"))
  done
  ;;
reuse1)  # ShadowKV's throughput at the value reuse real weights show (--emulate-reuse; SmolLM2 keeps 0.69 of
  # its chunks from step to step, random weights 0.04), one-batch step at 122,880
  for f in 0.3 0.6; do
    BENCH_TIMEOUT=200 BTAIL=3 bench --model llama-3.1-8b --context 122880 --method shadowkv --batch auto --steps 32 \
        --emulate-reuse $f --json "$OUT/tput_llama_122k_shadowkv_reuse$f.json"
  done
  ;;
groups1)  # the micro-batched step with scheduling groups (experimental): compiled pipeline tests, then both
  # contexts with the decode module's dump (is each chain's work between the other's kernel start and done?)
  [ -n "${NO_TESTS:-}" ] || SHADOWKV_KERNELS_COMPILED=1 timeout 200 python3 -m pytest -q -p no:cacheprovider --tb=short tests/test_pipeline.py \
      2>&1 | tee "$OUT/pipeline_groups_tests.txt" | grep -E "passed|failed|Error|assert" | tail -8
  for ctx in ${CTXS:-122880 65536}; do
    XLA_FLAGS="--xla_dump_to=/tmp/g$ctx $DUMP_DECODE" \
      BENCH_TIMEOUT=220 BTAIL=3 bench --model llama-3.1-8b --context $ctx --method shadowkv --batch auto --steps 32 \
        --micro-batches 2 --value-stream 1 --schedule-groups --json "$OUT/tput_llama_${ctx}_shadowkv_mb2_groups.json"
    (cd /tmp/g$ctx && tar czf "$OUT/dump_mb2_groups_$ctx.tgz" $(ls | grep -E "decode_loop.*after_optimizations\.txt$"))
  done
  ;;
hold1)  # each kernel's prepared operands held until the other micro-batch's kernel (no buffer reuse in
  # between): compiled kernel and pipeline tests, the streamed micro-batched step at 65,536 (with the decode
  # module's dump and buffer assignment) and 122,880
  SHADOWKV_KERNELS_COMPILED=1 timeout 200 python3 -m pytest -q -p no:cacheprovider --tb=short tests/test_pipeline.py \
      tests/test_kernels.py -k "micro or after_and_stream or groups" 2>&1 | tee "$OUT/pipeline_hold_tests.txt" \
      | grep -E "passed|failed|Error|assert" | tail -8
  XLA_FLAGS="--xla_dump_to=/tmp/h65536 $DUMP_DECODE" \
    BENCH_TIMEOUT=180 BTAIL=3 bench --model llama-3.1-8b --context 65536 --method shadowkv --batch auto --steps 32 \
      --micro-batches 2 --value-stream 1 --json "$OUT/tput_llama_64k_shadowkv_mb2_stream_hold.json"
  (cd /tmp/h65536 && tar czf "$OUT/dump_mb2_stream_hold_65536.tgz" \
    $(ls | grep -E "decode_loop.*after_optimizations(-buffer-assignment)?\.txt$"))
  BENCH_TIMEOUT=180 BTAIL=3 bench --model llama-3.1-8b --context 122880 --method shadowkv --batch auto --steps 32 \
      --micro-batches 2 --value-stream 1 --json "$OUT/tput_llama_122k_shadowkv_mb2_stream_hold.json"
  ;;
prof3)  # profiles: the streamed micro-batched step with held operands at 65,536 (do A's and B's kernels now
  # run beside the other's GEMMs?), the one-batch step at 122,880 with 60% emulated reuse (what bounds it
  # once the value reads shrink)
  BENCH_TIMEOUT=240 BTAIL=12 bench --model llama-3.1-8b --context 65536 --method shadowkv --batch auto --steps 8 \
      --micro-batches 2 --value-stream 1 --profile --json "$OUT/prof_llama_64k_shadowkv_mb2_stream_hold.json"
  BENCH_TIMEOUT=240 BTAIL=12 bench --model llama-3.1-8b --context 122880 --method shadowkv --batch auto --steps 16 \
      --emulate-reuse 0.6 --profile --json "$OUT/prof_llama_122k_shadowkv_reuse0.6.json"
  ;;
split1)  # split values (the GPU's free memory holds whole sequences' values, the rest in pinned host memory):
  # compiled kernel tests (host part in pinned host memory), then ShadowKV split at both contexts and full
  # attention at 122,880 in the same session
  SHADOWKV_KERNELS_COMPILED=1 timeout 200 python3 -m pytest -q -p no:cacheprovider --tb=short tests/test_kernels.py \
      -k "split or value_row or reuse or after_and_stream" 2>&1 | tee "$OUT/kernel_split_tests.txt" \
      | grep -E "passed|failed|Error|assert" | tail -8
  for ctx in ${CTXS:-122880 65536}; do
    BENCH_TIMEOUT=240 BTAIL=4 bench --model llama-3.1-8b --context $ctx --method shadowkv --batch auto --steps 32 \
        --value-placement split --json "$OUT/tput_llama_${ctx}_shadowkv_split.json"
  done
  [ -n "${NO_FULL:-}" ] || BENCH_TIMEOUT=150 BTAIL=3 bench --model llama-3.1-8b --context 122880 --method full \
      --batch auto --steps 32 --json "$OUT/tput_llama_122880_full.json"
  ;;
split2)  # the split step micro-batched with the kernels on stream 1, full attention at 65,536, and both methods
  # with the GPU limited to 80 GB (an H100's memory; the H200's HBM rate stays)
  BENCH_TIMEOUT=240 BTAIL=3 bench --model llama-3.1-8b --context 122880 --method shadowkv --batch auto --steps 32 \
      --value-placement split --micro-batches 2 --value-stream 1 --json "$OUT/tput_llama_122880_shadowkv_split_mb2.json"
  BENCH_TIMEOUT=120 BTAIL=3 full_auto --context 65536 \
      --json "$OUT/tput_llama_65536_full.json"
  BENCH_TIMEOUT=200 BTAIL=3 bench --model llama-3.1-8b --context 122880 --method shadowkv --batch auto --steps 32 \
      --value-placement split --gpu-memory-gb 80 --json "$OUT/tput_llama_122880_shadowkv_split_80gb.json"
  ;;
split3)  # where the split step's time goes at 122,880 (profile, 16 steps), and the split step at 60% emulated
  # value reuse (a labelled what-if: the reuse real weights show)
  BENCH_TIMEOUT=240 BTAIL=14 bench --model llama-3.1-8b --context 122880 --method shadowkv --batch auto --steps 16 \
      --value-placement split --profile --json "$OUT/prof_llama_122880_shadowkv_split.json"
  BENCH_TIMEOUT=200 BTAIL=3 bench --model llama-3.1-8b --context 122880 --method shadowkv --batch auto --steps 32 \
      --value-placement split --emulate-reuse 0.6 --json "$OUT/tput_llama_122880_shadowkv_split_reuse0.6.json"
  ;;
split4)  # the split step micro-batched as host rows + device rows (one chain's kernel reads PCIe while the
  # other runs from HBM), kernels on stream 1, both contexts
  for ctx in ${CTXS:-122880 65536}; do
    BENCH_TIMEOUT=230 BTAIL=3 bench --model llama-3.1-8b --context $ctx --method shadowkv --batch auto --steps 32 \
        --value-placement split --micro-batches 2 --value-stream 1 \
        --json "$OUT/tput_llama_${ctx}_shadowkv_split_mb2_aligned.json"
  done
  ;;
mem1)  # what the decode loop's temp holds with values on the GPU (compiled from shapes, 4 layers), vs split
  python3 benchmarks/compile_memory.py --method shadowkv --placement split --device-rows 7 --context 122880 --batch 19 \
      --layers 4 2>&1 | grep -E "values|temp"
  XLA_FLAGS="--xla_dump_to=/tmp/dump_dev $DUMP_DECODE" python3 benchmarks/compile_memory.py --method shadowkv \
      --placement device --context 122880 --batch ${MB:-10} --layers ${ML:-4} 2>&1 | grep -E "values|temp"
  f=$(ls /tmp/dump_dev/*decode_loop*buffer-assignment.txt | head -1); cp "$f" "$OUT/buffer_assignment_device.txt"
  python3 - "$f" <<'PY'
import re, sys
lines = open(sys.argv[1]).read().splitlines()
for i, l in enumerate(lines):
    m = re.match(r"allocation (\d+): size (\d+)", l)
    if m and int(m.group(2)) > 2**30:
        print(l[:200]); [print("   ", x[:220]) for x in lines[i + 1:i + 6]]
PY
  ;;
lm1)  # full attention at 65,536 (same session as dev2's ShadowKV rows)
  BENCH_TIMEOUT=120 BTAIL=3 full_auto --context 65536 \
      --json "$OUT/tput_llama_65536_full.json"
  ;;
var1)  # where the device-values kernel spends its time (variants of its loop body), the landmark kernel's launch
  timeout 330 python3 benchmarks/attention_variants.py --launches 16/16/4 8/16/4 4/32/8 \
      --json "$OUT/attention_variants_h200.json" 2>&1 | grep -v -i "warn\|stack_frame" | tail -12
  timeout 200 python3 benchmarks/landmark_variants.py --json "$OUT/landmark_variants_h200.json" 2>&1 \
      | grep -v -i "warn\|stack_frame" | tail -12
  ;;
rope1)  # RoPE from tables by angle addition, the landmark scores as one dot: compiled kernel tests, the kernel
  # at 122,880 x 10 (device values), ShadowKV (device values) and full attention at 122,880 in the same session
  SHADOWKV_KERNELS_COMPILED=1 timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_kernels.py \
      -k "fp32 or bf16_error or blocks_are or long_positions or landmark or split_values" 2>&1 | tail -3 \
      | tee "$OUT/kernel_tests_rope1_h200.txt"
  timeout 150 python3 benchmarks/bench_kernels.py --contexts 122880 --batches 10 --placements device --splits 8 16 32 \
      --block-tokens 16 32 --warps 4 --repeats 5 --json "$OUT/kernels_rope_tables_h200.json" 2>&1 | tail -8
  timeout 100 python3 benchmarks/landmark_variants.py --launches rows/128/4 dot/128/4 --json "$OUT/landmark_dot_h200.json" \
      2>&1 | tail -3
  ;;
rope2)
  BENCH_TIMEOUT=150 BTAIL=3 sk_device --context 122880 --batch auto \
      --json "$OUT/tput_llama_122880_shadowkv_device.json"
  BENCH_TIMEOUT=150 BTAIL=3 full_auto --context 122880 \
      --json "$OUT/tput_llama_122880_full.json"
  ;;
rope3)  # fp32 launches in one pipeline stage (shared memory): the compiled kernel tests again; both methods at 65,536
  SHADOWKV_KERNELS_COMPILED=1 timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_kernels.py \
      -k "fp32 or bf16_error or blocks_are or long_positions or landmark or split_values or reuse" 2>&1 | tail -3 \
      | tee "$OUT/kernel_tests_rope3_h200.txt"
  BENCH_TIMEOUT=120 BTAIL=3 sk_device --context 65536 --batch auto \
      --json "$OUT/tput_llama_65536_shadowkv_device.json"
  BENCH_TIMEOUT=120 BTAIL=3 full_auto --context 65536 \
      --json "$OUT/tput_llama_65536_full.json"
  ;;
prof4)  # where the step with RoPE tables spends its time (--profile), ShadowKV with the GPU capped at 80 GB
  BENCH_TIMEOUT=150 BTAIL=30 sk_device --context 122880 --batch 10 \
      --profile --json "$OUT/prof_llama_122880_shadowkv_rope_tables.json"
  BENCH_TIMEOUT=120 BTAIL=3 sk_device --context 122880 --batch auto \
      --gpu-memory-gb 80 --json "$OUT/tput_llama_122880_shadowkv_device_80gb.json"
  ;;
rope4)  # two small fp32-exact RoPE tables (no per-layer table of n_c rows): compiled kernel tests, a launch sweep at
  # 122,880 x 10, ShadowKV (device values) at both contexts
  SHADOWKV_KERNELS_COMPILED=1 timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_kernels.py \
      -k "fp32 or bf16_error or blocks_are or long_positions or landmark or split_values or reuse" 2>&1 | tail -3 \
      | tee "$OUT/kernel_tests_rope4_h200.txt"
  timeout 150 python3 benchmarks/bench_kernels.py --contexts 122880 --batches 10 --placements device --splits 16 32 \
      --block-tokens 16 --warps 2 4 --stages 1 2 --repeats 5 --json "$OUT/kernels_rope4_h200.json" 2>&1 | tail -9
  BENCH_TIMEOUT=150 BTAIL=3 sk_device --context 122880 --batch auto \
      --json "$OUT/tput_llama_122880_shadowkv_device.json"
  BENCH_TIMEOUT=120 BTAIL=3 sk_device --context 65536 --batch auto \
      --json "$OUT/tput_llama_65536_shadowkv_device.json"
  ;;
rope5)  # the chunk-start RoPE table again, now built from two small fp32-exact tables: compiled kernel tests,
  # the kernel at 122,880 x 10, ShadowKV (device values) at both contexts
  SHADOWKV_KERNELS_COMPILED=1 timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_kernels.py \
      -k "fp32 or bf16_error or blocks_are or long_positions or landmark or split_values or reuse" 2>&1 | tail -3 \
      | tee "$OUT/kernel_tests_rope5_h200.txt"
  timeout 60 python3 benchmarks/bench_kernels.py --contexts 122880 --batches 10 --placements device --splits 16 \
      --block-tokens 16 --warps 4 --repeats 5 --json "$OUT/kernels_rope5_h200.json" 2>&1 | tail -3
  BENCH_TIMEOUT=150 BTAIL=3 sk_device --context 122880 --batch auto \
      --json "$OUT/tput_llama_122880_shadowkv_device.json"
  BENCH_TIMEOUT=120 BTAIL=3 sk_device --context 65536 --batch auto \
      --json "$OUT/tput_llama_65536_shadowkv_device.json"
  ;;
sel4)  # the selection ranks by log-probabilities (no softmax pass): ShadowKV (device values) at both contexts
  BENCH_TIMEOUT=130 BTAIL=3 sk_device --context 122880 --batch auto \
      --json "$OUT/tput_llama_122880_shadowkv_device.json"
  BENCH_TIMEOUT=100 BTAIL=3 sk_device --context 65536 --batch auto \
      --json "$OUT/tput_llama_65536_shadowkv_device.json"
  ;;
sel5)  # the selection in one kernel (kernels/chunk_selection.py) and the combine without a copy of the segments:
  # compiled kernel tests, the selection's three paths, ShadowKV (device values) at 122,880 x 10 and its profile
  SHADOWKV_KERNELS_COMPILED=1 timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_kernels.py \
      -k "fp32 or bf16_error or blocks_are or long_positions or landmark or split_values or reuse or chunk_selection \
      or top_k or combine" 2>&1 | tail -3 | tee "$OUT/kernel_tests_sel5_h200.txt"
  (cd benchmarks && timeout 90 python3 bench_select.py --batch 10 --context 122880 --json "$OUT/select_sel5_h200.json" \
      2>&1 | tail -6)
  BENCH_TIMEOUT=130 BTAIL=3 sk_device --context 122880 --batch 10 \
      --json "$OUT/tput_llama_122880_shadowkv_device.json"
  BENCH_TIMEOUT=130 BTAIL=30 sk_device --context 122880 --batch 10 \
      --profile --json "$OUT/prof_llama_122880_shadowkv_sel5.json"
  ;;
sel6)  # the fused selection with the score in one pass per row, 16 warps, the combine as before: its compiled tests,
  # the selection's paths, ShadowKV (device values) at 122,880 x 10
  SHADOWKV_KERNELS_COMPILED=1 timeout 100 python3 -m pytest -q -p no:cacheprovider tests/test_kernels.py \
      -k "chunk_selection or top_k or combine" 2>&1 | tail -2 | tee "$OUT/kernel_tests_sel6_h200.txt"
  (cd benchmarks && timeout 90 python3 bench_select.py --batch 10 --context 122880 --json "$OUT/select_sel6_h200.json" \
      2>&1 | tail -7)
  BENCH_TIMEOUT=130 BTAIL=3 sk_device --context 122880 --batch 10 \
      --json "$OUT/tput_llama_122880_shadowkv_device.json"
  ;;
pad7)  # no XLA pads before the landmark and attention kernels (query groups and chunk ids padded as loaded): the
  # compiled kernel tests, then both methods at both contexts in one session (ShadowKV with device values)
  SHADOWKV_KERNELS_COMPILED=1 timeout 220 python3 -m pytest -q -p no:cacheprovider tests/test_kernels.py \
      -k "fp32 or bf16_error or blocks_are or long_positions or landmark or split_values or reuse or chunk_selection \
      or top_k" 2>&1 | tail -2 | tee "$OUT/kernel_tests_pad7_h200.txt"
  BENCH_TIMEOUT=130 BTAIL=3 sk_device --context 122880 --batch auto \
      --json "$OUT/tput_llama_122880_shadowkv_device.json"
  BENCH_TIMEOUT=150 BTAIL=3 full_auto --context 122880 \
      --json "$OUT/tput_llama_122880_full.json"
  BENCH_TIMEOUT=120 BTAIL=3 sk_device --context 65536 --batch auto \
      --json "$OUT/tput_llama_65536_shadowkv_device.json"
  BENCH_TIMEOUT=120 BTAIL=3 full_auto --context 65536 \
      --json "$OUT/tput_llama_65536_full.json"
  ;;
launch8)  # the attention kernel's launch again, now that cos/sin come from tables: 24 shapes at 122,880 x 10
  timeout 400 python3 benchmarks/bench_kernels.py --contexts 122880 --batches 10 --placements device --splits 8 16 32 \
      --block-tokens 16 32 --warps 4 8 --stages 1 2 --repeats 5 --json "$OUT/kernels_launch8_h200.json" 2>&1 | tail -28
  ;;
prof9)  # this session's kept version once more on another machine: both methods at 122,880, ShadowKV under an 80 GB
  # cap, and where the ShadowKV step spends its time (--profile)
  BENCH_TIMEOUT=130 BTAIL=3 sk_device --context 122880 --batch auto \
      --json "$OUT/tput_llama_122880_shadowkv_device.json"
  BENCH_TIMEOUT=150 BTAIL=3 full_auto --context 122880 \
      --json "$OUT/tput_llama_122880_full.json"
  BENCH_TIMEOUT=120 BTAIL=3 sk_device --context 122880 --batch auto \
      --gpu-memory-gb 80 --json "$OUT/tput_llama_122880_shadowkv_device_80gb.json"
  BENCH_TIMEOUT=130 BTAIL=24 sk_device --context 122880 --batch 10 \
      --profile --json "$OUT/prof_llama_122880_shadowkv_prof9.json"
  ;;
bar10)  # the new token's append (and the combine's copy of the exact segments) ordered after the selection: ShadowKV
  # at 122,880 x 10, full attention at its largest batch, the ShadowKV step's profile
  BENCH_TIMEOUT=130 BTAIL=3 sk_device --context 122880 --batch auto \
      --json "$OUT/tput_llama_122880_shadowkv_device.json"
  BENCH_TIMEOUT=150 BTAIL=3 full_auto --context 122880 \
      --json "$OUT/tput_llama_122880_full.json"
  BENCH_TIMEOUT=130 BTAIL=24 sk_device --context 122880 --batch 10 \
      --profile --json "$OUT/prof_llama_122880_shadowkv_bar10.json"
  ;;
seg11)  # the exact segments read after the selection (their copy beside the attention kernel): ShadowKV at
  # 122,880 x 10, full attention at its largest batch, then the ShadowKV step's profile
  BENCH_TIMEOUT=120 BTAIL=3 sk_device --context 122880 --batch auto \
      --json "$OUT/tput_llama_122880_shadowkv_device.json"
  BENCH_TIMEOUT=130 BTAIL=3 full_auto --context 122880 \
      --json "$OUT/tput_llama_122880_full.json"
  BENCH_TIMEOUT=100 BTAIL=8 sk_device --context 122880 --batch 10 \
      --profile --json "$OUT/prof_llama_122880_shadowkv_seg11.json"
  ;;
half12)  # the attention kernel with the rotate-half halves as separate dots (no rot(W) product): its compiled tests,
  # ShadowKV at 122,880 x 10, then with the appends and segment copies ordered after the selection (the patch
  # that ran is commit 90f6890's decode.after_selection, since removed), full attention at its largest batch, a
  # short launch sweep
  SHADOWKV_KERNELS_COMPILED=1 timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_kernels.py \
      -k "fp32 or bf16_error or blocks_are or long_positions or partial_rotary or head_pieces or split_values \
      or reuse" 2>&1 | tail -2 | tee "$OUT/kernel_tests_half12_h200.txt"
  BENCH_TIMEOUT=120 BTAIL=3 sk_device --context 122880 --batch auto --json "$OUT/tput_llama_122880_shadowkv_device.json"
  BENCH_TIMEOUT=130 BTAIL=3 full_auto --context 122880 --json "$OUT/tput_llama_122880_full.json"
  timeout 100 python3 benchmarks/bench_kernels.py --contexts 122880 --batches 10 --placements device --splits 16 \
      --block-tokens 16 32 --warps 4 --stages 1 2 --repeats 5 --json "$OUT/kernels_half12_h200.json" 2>&1 | tail -8
  ;;
half13)  # the kept version (halves as separate dots, appends after the selection, 32-token device blocks): both
  # methods at both contexts in one session, ShadowKV under an 80 GB cap
  both_methods
  ;;
half14)  # the device launch in the step: 32-token blocks (kept) against 16, ShadowKV at 122,880 x 10, each with its
  # profile (the kernel bench's loop favours 32: 0.110 ms against 0.132)
  L=kernels/sparse_attention.py
  for blk in 32 16; do
    sed -i "s/^DEVICE_VALUES_LAUNCH = {\"block_tokens\": [0-9]*/DEVICE_VALUES_LAUNCH = {\"block_tokens\": $blk/" $L
    grep "^DEVICE_VALUES_LAUNCH" $L
    BENCH_TIMEOUT=110 BTAIL=3 sk_device --context 122880 --batch auto --json "$OUT/tput_llama_122880_shadowkv_block$blk.json"
    BENCH_TIMEOUT=110 BTAIL=24 sk_device --context 122880 --batch 10 --profile \
        --json "$OUT/prof_llama_122880_shadowkv_block$blk.json"
  done
  ;;
wonce15)  # W loaded once per program (w_once) in a launch sweep at 122,880 x 10; the fastest launch in the loop
  # becomes DEVICE_VALUES_LAUNCH (benchmarks/pick_launch.py) for ShadowKV at both contexts; the w_once tests compiled
  SHADOWKV_KERNELS_COMPILED=1 timeout 100 python3 -m pytest -q -p no:cacheprovider tests/test_kernels.py \
      -k "w_loaded_once or partial_rotary" 2>&1 | tail -1 | tee "$OUT/kernel_tests_wonce15_h200.txt"
  timeout 260 python3 benchmarks/bench_kernels.py --contexts 122880 --batches 10 --placements device --splits 8 16 \
      --block-tokens 32 64 --warps 4 8 --stages 2 --w-once 0 1 --repeats 5 --json "$OUT/kernels_wonce15_h200.json" \
      2>&1 | tail -20
  python3 benchmarks/pick_launch.py "$OUT/kernels_wonce15_h200.json" && grep "^DEVICE_VALUES_LAUNCH" kernels/sparse_attention.py
  BENCH_TIMEOUT=110 BTAIL=3 sk_device --context 122880 --batch auto --json "$OUT/tput_llama_122880_shadowkv_device.json"
  BENCH_TIMEOUT=100 BTAIL=3 sk_device --context 65536 --batch auto --json "$OUT/tput_llama_65536_shadowkv_device.json"
  ;;
kept16)  # the kept version (DEVICE_VALUES_LAUNCH 8 splits of 64-token blocks): fp32 kernel tests compiled, both
  # methods at both contexts in one session, ShadowKV under an 80 GB cap, the ShadowKV step's profile
  SHADOWKV_KERNELS_COMPILED=1 timeout 100 python3 -m pytest -q -p no:cacheprovider tests/test_kernels.py \
      -k "fp32 or blocks_are" 2>&1 | tail -1 | tee "$OUT/kernel_tests_kept16_h200.txt"
  both_methods
  BENCH_TIMEOUT=100 BTAIL=24 sk_device --context 122880 --batch 10 --profile --json "$OUT/prof_llama_122880_shadowkv_kept16.json"
  ;;
exact17)  # the exact segments read in the attention kernel's launch: their compiled tests, ShadowKV at 122,880 x 10,
  # again with the new token's append ordered after the selection (benchmarks/patches/append_after_selection.patch),
  # ShadowKV at 65,536 x 19
  SHADOWKV_KERNELS_COMPILED=1 timeout 110 python3 -m pytest -q -p no:cacheprovider tests/test_kernels.py \
      -k "exact_segments or fp32 or reuse" 2>&1 | tail -1 | tee "$OUT/kernel_tests_exact17_h200.txt"
  BENCH_TIMEOUT=90 BTAIL=3 sk_device --context 122880 --batch auto --json "$OUT/tput_llama_122880_shadowkv_device.json"
  P=benchmarks/patches/append_after_selection.patch
  if git apply $P || patch -p1 < $P; then
    BENCH_TIMEOUT=90 BTAIL=3 sk_device --context 122880 --batch auto \
        --json "$OUT/tput_llama_122880_shadowkv_device_dep.json"
    git apply -R $P || patch -R -p1 < $P
  fi
  BENCH_TIMEOUT=80 BTAIL=3 sk_device --context 65536 --batch auto --json "$OUT/tput_llama_65536_shadowkv_device.json"
  ;;
gap18)  # the kernel tests not compiled since exact17 (value reuse, value_row, after/stream, split values); the kept
  # version's profile at 122,880 x 10; the same row at 128 steps (is the ~2.8 ms per step between the profile's
  # span and the timed step paid per call?) and with XLA's while loops inside command buffers
  SHADOWKV_KERNELS_COMPILED=1 timeout 240 python3 -m pytest -q -p no:cacheprovider tests/test_kernels.py \
      -k "hits_from_the_cache or value_row or after_and_stream or split_values" 2>&1 | tail -2 \
      | tee "$OUT/kernel_tests_gap18_h200.txt"
  BENCH_TIMEOUT=110 BTAIL=24 sk_device --context 122880 --batch 10 --profile --json "$OUT/prof_llama_122880_shadowkv_gap18.json"
  BENCH_TIMEOUT=100 BTAIL=3 sk_device --context 122880 --batch 10 --steps 128 --json "$OUT/tput_llama_122880_shadowkv_steps128.json"
  XLA_FLAGS="--xla_gpu_enable_command_buffer=+WHILE,+CONDITIONAL" BENCH_TIMEOUT=100 BTAIL=3 sk_device --context 122880 \
      --batch 10 --json "$OUT/tput_llama_122880_shadowkv_cmdbuf_while.json"
  ;;
gap19)  # where the ~3 ms per step between the profile's span and the timed step goes: ShadowKV at 122,880 x 10
  # with 3 timed calls (each call's time) and the profiled call's wall, then 8 steps per call (a cost per call
  # would show as a longer step)
  BENCH_TIMEOUT=120 BTAIL=6 sk_device --context 122880 --batch 10 --timed-calls 3 --profile \
      --json "$OUT/prof_llama_122880_shadowkv_gap19.json"
  BENCH_TIMEOUT=100 BTAIL=3 sk_device --context 122880 --batch 10 --steps 8 --timed-calls 3 \
      --json "$OUT/tput_llama_122880_shadowkv_steps8.json"
  ;;
timed20)  # both methods at both contexts and ShadowKV under 80 GB, timed with the slice of the last tokens
  # outside the timed call (before gap19 its first use, a small compile, ran inside it) and 3 timed calls each
  both_methods
  ;;
order21)  # the attention kernel with the exact segments' programs first in its grid and the value loads issued
  # before the reconstruction: compiled tests, ShadowKV at 122,880 x 10; again with 64-row exact blocks; the HBM
  # read rate by other read-bound kernels than the roofline's probe
  SHADOWKV_KERNELS_COMPILED=1 timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_kernels.py \
      -k "exact_segments or fp32 or value_row or split_values" 2>&1 | tail -1 | tee "$OUT/kernel_tests_order21_h200.txt"
  BENCH_TIMEOUT=100 BTAIL=4 sk_device --context 122880 --batch 10 --json "$OUT/tput_llama_122880_shadowkv_order21.json"
  sed -i "s/^EXACT_BLOCK_TOKENS = 32/EXACT_BLOCK_TOKENS = 64/" kernels/sparse_attention.py
  BENCH_TIMEOUT=100 BTAIL=4 sk_device --context 122880 --batch 10 --json "$OUT/tput_llama_122880_shadowkv_exact64.json"
  git checkout kernels/sparse_attention.py
  timeout 60 python3 benchmarks/bench_hbm_read.py --json "$OUT/hbm_read_h200.json"
  ;;
final22)  # the kept version (64-row exact blocks): the exact-segment tests compiled, ShadowKV at both contexts,
  # both methods under an 80 GB cap
  SHADOWKV_KERNELS_COMPILED=1 timeout 90 python3 -m pytest -q -p no:cacheprovider tests/test_kernels.py \
      -k "exact_segments" 2>&1 | tail -1 | tee "$OUT/kernel_tests_final22_h200.txt"
  BENCH_TIMEOUT=100 BTAIL=3 sk_device --context 122880 --batch auto --json "$OUT/tput_llama_122880_shadowkv_device.json"
  BENCH_TIMEOUT=90 BTAIL=3 sk_device --context 65536 --batch auto --json "$OUT/tput_llama_65536_shadowkv_device.json"
  BENCH_TIMEOUT=100 BTAIL=3 full_auto --context 122880 --gpu-memory-gb 80 --json "$OUT/tput_llama_122880_full_80gb.json"
  BENCH_TIMEOUT=90 BTAIL=3 sk_device --context 122880 --batch auto --gpu-memory-gb 80 \
      --json "$OUT/tput_llama_122880_shadowkv_device_80gb.json"
  ;;
probe23)  # the roofline's HBM probe as the best of 30 runs (was 10): its spread over 30 runs of each read kernel,
  # then ShadowKV at 122,880 x 10 and full attention at 65,536 x 12 with it
  timeout 40 python3 benchmarks/bench_hbm_read.py --repeats 30 --json "$OUT/hbm_read_30_h200.json"
  BENCH_TIMEOUT=90 BTAIL=3 sk_device --context 122880 --batch auto --json "$OUT/tput_llama_122880_shadowkv_device.json"
  BENCH_TIMEOUT=90 BTAIL=3 full_auto --context 65536 --json "$OUT/tput_llama_65536_full.json"
  ;;
once24)  # the attention kernel's RoPE tables built once, when the step is traced (constants), W read in place at the
  # layer, q's and k's cos and sin once per step; with them the selection's threshold by a ternary search (21
  # passes, not 32; benchmarks/patches/once24_sel.patch, tried and not kept): the compiled kernel tests, ShadowKV
  # at 122,880 x 10 with its profile; again without the ternary search, then without the rest (once24_rope.patch
  # reversed: the fifteenth session's code)
  S=benchmarks/patches/once24_sel.patch
  git apply $S 2>/dev/null || patch -p1 < $S > /dev/null || echo "applying $S failed"
  SHADOWKV_KERNELS_COMPILED=1 timeout 240 python3 -m pytest -q -p no:cacheprovider tests/test_kernels.py \
      -k "not decode_attention and not landmark and not variant" 2>&1 | tail -3 | tee "$OUT/kernel_tests_once24_h200.txt"
  BENCH_TIMEOUT=120 BTAIL=6 sk_device --context 122880 --batch 10 --profile \
      --json "$OUT/prof_llama_122880_shadowkv_once24.json"
  for C in sel rope; do
    P=benchmarks/patches/once24_$C.patch
    git apply -R $P 2>/dev/null || patch -R -p1 < $P > /dev/null || { echo "reversing $P failed"; break; }
    BENCH_TIMEOUT=100 BTAIL=3 sk_device --context 122880 --batch 10 \
        --json "$OUT/tput_llama_122880_shadowkv_without_${C}_once24.json"
  done
  ;;
exp26)  # at 122,880 x 10, ShadowKV: the kept version; the layer scan unrolled by 2 (the loop's per-layer launch gap);
  # k's and v's GEMMs after q's (benchmarks/patches/kv_after_q.patch), with its profile
  BENCH_TIMEOUT=100 BTAIL=3 sk_device --context 122880 --batch 10 --json "$OUT/tput_llama_122880_shadowkv_exp26.json"
  BENCH_TIMEOUT=130 BTAIL=3 sk_device --context 122880 --batch 10 --unroll-layers 2 \
      --json "$OUT/tput_llama_122880_shadowkv_unroll2_exp26.json"
  P=benchmarks/patches/kv_after_q.patch
  git apply $P 2>/dev/null || patch -p1 < $P > /dev/null || echo "applying $P failed"
  BENCH_TIMEOUT=120 BTAIL=3 sk_device --context 122880 --batch 10 --profile \
      --json "$OUT/prof_llama_122880_shadowkv_kv_after_q_exp26.json"
  ;;
once25)  # the kept version (once24 without the ternary search): both methods at both contexts, ShadowKV under an
  # 80 GB cap
  both_methods
  ;;
once25b)  # on the same machine right after once25: full attention under an 80 GB cap, the kept step's profile
  BENCH_TIMEOUT=100 BTAIL=3 full_auto --context 122880 --gpu-memory-gb 80 --json "$OUT/tput_llama_122880_full_80gb.json"
  BENCH_TIMEOUT=100 BTAIL=3 sk_device --context 122880 --batch 10 --profile \
      --json "$OUT/prof_llama_122880_shadowkv_once25.json"
  ;;
sweep27)  # the attention kernel's launch with 1 or 2 pipeline stages (the 64-token blocks were swept with 2 only), then
  # ShadowKV at 122,880 x 10 with the fastest in the loop (benchmarks/pick_launch.py)
  timeout 300 python3 benchmarks/bench_kernels.py --contexts 122880 --batches 10 --placements device --splits 8 16 \
      --block-tokens 32 64 --warps 4 --stages 1 2 --repeats 5 --json "$OUT/kernels_sweep27_h200.json" 2>&1 | tail -12
  python3 benchmarks/pick_launch.py "$OUT/kernels_sweep27_h200.json" && grep "^DEVICE_VALUES_LAUNCH" kernels/sparse_attention.py
  BENCH_TIMEOUT=100 BTAIL=3 sk_device --context 122880 --batch 10 --json "$OUT/tput_llama_122880_shadowkv_sweep27.json"
  ;;
mend28)  # the review's cached RoPE tables: the kernel tests that build them, compiled; ShadowKV at 122,880 x 10
  SHADOWKV_KERNELS_COMPILED=1 timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_kernels.py \
      -k "rope_at or in_place or partials_match or exact_segments" 2>&1 | tail -1 | tee "$OUT/kernel_tests_mend28_h200.txt"
  BENCH_TIMEOUT=100 BTAIL=3 sk_device --context 122880 --batch 10 --json "$OUT/tput_llama_122880_shadowkv_mend28.json"
  ;;
chain29)  # (ran with the attention chains in the code: apply benchmarks/patches/attention_chains.patch to rerun)
  # the threshold search's early stop and the attention chains: compiled tests; the selection paths with the
  # early stop and without (benchmarks/patches/no_early_exit.patch); ShadowKV at 122,880 x 10 with 1 and 2 chains,
  # the 2-chain step profiled
  SHADOWKV_KERNELS_COMPILED=1 timeout 150 python3 -m pytest -q -p no:cacheprovider --tb=short tests/test_kernels.py \
      -k "group_of_rows or threshold or top_k or chunk_selection or landmark or in_place or exact_segments" 2>&1 \
      | grep -E "passed|failed|Error|assert" | tail -6 | tee "$OUT/kernel_tests_chain29_h200.txt"
  timeout 120 python3 -m pytest -q -p no:cacheprovider --tb=short tests/test_pipeline.py -k chains 2>&1 \
      | grep -E "passed|failed|Error|assert" | tail -6 | tee -a "$OUT/kernel_tests_chain29_h200.txt"
  timeout 120 python3 benchmarks/bench_select.py --batch 10 --context 122880 --warps 16 \
      --json "$OUT/select_chain29_h200.json" 2>&1 | tail -2
  git apply benchmarks/patches/no_early_exit.patch 2>/dev/null || patch -p1 -s < benchmarks/patches/no_early_exit.patch
  timeout 120 python3 benchmarks/bench_select.py --batch 10 --context 122880 --warps 16 \
      --json "$OUT/select_chain29_no_early_exit_h200.json" 2>&1 | tail -2
  git apply -R benchmarks/patches/no_early_exit.patch 2>/dev/null || patch -R -p1 -s < benchmarks/patches/no_early_exit.patch
  grep -c "while_loop(more" kernels/top_k.py
  BENCH_TIMEOUT=100 BTAIL=3 sk_device --context 122880 --batch 10 --json "$OUT/tput_llama_122880_shadowkv_chain29_c1.json"
  BENCH_TIMEOUT=100 BTAIL=3 sk_device --context 122880 --batch 10 --attention-chains 2 \
      --json "$OUT/tput_llama_122880_shadowkv_chain29_c2.json"
  BENCH_TIMEOUT=140 BTAIL=3 sk_device --context 122880 --batch 10 --attention-chains 2 --profile \
      --json "$OUT/prof_llama_122880_shadowkv_chain29_c2.json"
  ;;
pad30)  # the decode step's rows padded to a multiple of 8 (model/llama.DECODE_ROW_MULTIPLE): ShadowKV at 122,880 x 10
  # with and without (benchmarks/patches/no_row_padding.patch); a launch sweep of the attention kernel with
  # 128-token blocks, and ShadowKV with the fastest launch of the loop
  SHADOWKV_KERNELS_COMPILED=1 timeout 100 python3 -m pytest -q -p no:cacheprovider --tb=short tests/test_kernels.py \
      -k "partials_match" 2>&1 | grep -E "passed|failed|Error|assert" | tail -4 | tee "$OUT/kernel_tests_pad30_h200.txt"
  BENCH_TIMEOUT=100 BTAIL=1 sk_device --context 122880 --batch 10 --json "$OUT/tput_llama_122880_shadowkv_pad30.json"
  git apply benchmarks/patches/no_row_padding.patch 2>/dev/null || patch -p1 -s < benchmarks/patches/no_row_padding.patch
  grep "^DECODE_ROW_MULTIPLE" shadowkv_jax/model/llama.py
  BENCH_TIMEOUT=100 BTAIL=1 sk_device --context 122880 --batch 10 --json "$OUT/tput_llama_122880_shadowkv_pad30_off.json"
  git apply -R benchmarks/patches/no_row_padding.patch 2>/dev/null || patch -R -p1 -s < benchmarks/patches/no_row_padding.patch
  grep "^DECODE_ROW_MULTIPLE" shadowkv_jax/model/llama.py
  timeout 200 python3 benchmarks/bench_kernels.py --contexts 122880 --batches 10 --placements device --splits 4 8 \
      --block-tokens 64 128 --warps 4 8 --stages 1 2 --repeats 10 --json "$OUT/kernels_pad30_h200.json" 2>&1 \
      | grep "^| 122880" | cut -c1-150
  python3 benchmarks/pick_launch.py "$OUT/kernels_pad30_h200.json" && grep "^DEVICE_VALUES_LAUNCH" kernels/sparse_attention.py
  BENCH_TIMEOUT=100 BTAIL=1 sk_device --context 122880 --batch 10 --json "$OUT/tput_llama_122880_shadowkv_pad30_launch.json"
  ;;
final31a)  # (ran with the attention chains in the code: apply benchmarks/patches/attention_chains.patch to rerun)
  # the attention chains launched in order (decode._done_marker) against one chain at 122,880 x 10, then
  # ShadowKV (with the faster) and full attention at their largest batches at 122,880
  timeout 90 python3 -m pytest -q -p no:cacheprovider --tb=short tests/test_pipeline.py -k chains 2>&1 \
      | grep -E "passed|failed|Error|assert" | tail -4 | tee "$OUT/tests_final31_h200.txt"
  BENCH_TIMEOUT=100 BTAIL=1 sk_device --context 122880 --batch 10 --json "$OUT/tput_llama_122880_shadowkv_final31_c1.json"
  BENCH_TIMEOUT=100 BTAIL=1 sk_device --context 122880 --batch 10 --attention-chains 2 \
      --json "$OUT/tput_llama_122880_shadowkv_final31_c2.json"
  CH=$(python3 -c "
import json; s = [json.load(open('$OUT/tput_llama_122880_shadowkv_final31_c%d.json' % c))['rows'][0]['step_ms'] for c in (1, 2)]
print(2 if s[1] < s[0] else 1)" 2>/dev/null || echo 1); echo "chains: $CH" | tee "$OUT/chains_final31.txt"
  BENCH_TIMEOUT=110 BTAIL=1 sk_device --context 122880 --batch auto --attention-chains $CH \
      --json "$OUT/tput_llama_122880_shadowkv_device.json"
  BENCH_TIMEOUT=130 BTAIL=1 full_auto --context 122880 --json "$OUT/tput_llama_122880_full.json"
  ;;
final31b)  # (ran with the attention chains in the code, like final31a: its --attention-chains needs the patch)
  # the same at 65,536 (CH chains, from final31a), then both methods under an 80 GB cap
  BENCH_TIMEOUT=110 BTAIL=1 sk_device --context 65536 --batch auto --attention-chains ${CH:-1} \
      --json "$OUT/tput_llama_65536_shadowkv_device.json"
  BENCH_TIMEOUT=110 BTAIL=1 full_auto --context 65536 --json "$OUT/tput_llama_65536_full.json"
  BENCH_TIMEOUT=100 BTAIL=1 sk_device --context 122880 --batch auto --gpu-memory-gb 80 --attention-chains ${CH:-1} \
      --json "$OUT/tput_llama_122880_shadowkv_device_80gb.json"
  BENCH_TIMEOUT=110 BTAIL=1 full_auto --context 122880 --gpu-memory-gb 80 --json "$OUT/tput_llama_122880_full_80gb.json"
  ;;
anat33)  # the hardware counters (Nsight Compute) of one layer's landmark, selection and attention kernels at
  # 122,880 x 10 (benchmarks/kernel_anatomy.py): the details page and the attention kernel's SASS with stall samples
  NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu | head -1); echo "ncu: $NCU"
  XLA_FLAGS=--xla_gpu_enable_command_buffer= timeout 300 $NCU --clock-control none -k regex:shadowkv \
      --launch-skip 3 --launch-count 3 --set full --import-source no -f -o "$OUT/anatomy" \
      python3 benchmarks/kernel_anatomy.py --calls 2 2>&1 | grep -v "^==PROF==" | tail -5
  $NCU -i "$OUT/anatomy.ncu-rep" --page details --print-details all > "$OUT/ncu_details.txt" 2>&1
  $NCU -i "$OUT/anatomy.ncu-rep" --page source --csv --print-source sass -k regex:gather \
      > "$OUT/ncu_sass_attention.csv" 2>&1; wc -l "$OUT/ncu_sass_attention.csv"
  grep -E "^  shadowkv|Duration|Registers Per|Shared Memory Config|Dynamic Shared|Achieved Occupancy|Theoretical Occ|Block Limit|DRAM Throughput|Memory Throughput|Compute \(SM\) Thr|Waves Per SM|Local Memory Spill|No Eligible|Issued Warp" \
      "$OUT/ncu_details.txt" | cut -c1-110
  ;;
anat34)  # the attention kernel's launches: registers, shared memory, occupancy and time of each (ncu), then in the
  # 32-call loop; the landmark kernel looping over blocks; the selection's warps; ShadowKV at 122,880 x 10 with the
  # fastest attention and landmark launches
  NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu | head -1)
  L="${LAUNCHES:-8/64/4/2/0 8/64/4/2/1 8/64/4/3/1 4/64/4/3/1 8/32/4/2/1 8/32/4/3/1 16/32/4/2/1 16/32/4/3/1 8/128/8/2/1 4/128/8/2/1 8/64/8/2/1 8/64/4/1/1 8/64/4/1/0 8/32/4/4/1}"
  XLA_FLAGS=--xla_gpu_enable_command_buffer= timeout 200 $NCU --clock-control none -k regex:gather --section LaunchStats \
      --section Occupancy --section SpeedOfLight -f -o /tmp/launches python3 benchmarks/kernel_anatomy.py --launches $L \
      2>&1 | grep "^launch" | tee /tmp/launches.txt
  $NCU -i /tmp/launches.ncu-rep --page details --csv > "$OUT/ncu_launches_anat34.csv"
  python3 benchmarks/ncu_summary.py "$OUT/ncu_launches_anat34.csv" --json "$OUT/ncu_launches_anat34.json" \
      --labels $(grep ": ran" /tmp/launches.txt | cut -d" " -f2 | tr -d :)
  timeout 240 python3 benchmarks/bench_kernels.py --contexts 122880 --batches 10 --placements device --launches $L \
      --repeats 10 --json "$OUT/kernels_anat34_h200.json" 2>&1 | grep "^| 122880" | cut -c1-140
  timeout 80 python3 benchmarks/landmark_variants.py --launches dot/128/4 dot/128/4/4/2 dot/128/4/8/3 dot/64/4/8/3 \
      dot/128/8/8/3 dot/256/8/4/2 dot/128/4/16/3 --json "$OUT/landmark_anat34_h200.json" 2>&1 | tail -9
  timeout 80 python3 benchmarks/bench_select.py --batch 10 --context 122880 --warps 8 16 \
      --json "$OUT/select_anat34_h200.json" 2>&1 | tail -4
  python3 benchmarks/pick_launch.py "$OUT/kernels_anat34_h200.json"
  python3 benchmarks/pick_launch.py --landmark "$OUT/landmark_anat34_h200.json"
  BENCH_TIMEOUT=110 BTAIL=1 sk_device --context 122880 --batch 10 --json "$OUT/tput_llama_122880_shadowkv_anat34.json"
  ;;
anat35)  # the next block's chunk ids loaded a block ahead in the attention kernel, the chunk ids loaded again under
  # the output mask in the selection, the landmark kernel's loop launch: compiled tests; the attention kernel's
  # launches in the loop with the early ids and without (benchmarks/patches/no_id_prefetch.patch); the selection
  # with the reload and without; ShadowKV at 122,880 x 10 with the fastest launch, with and
  # without the early ids
  SHADOWKV_KERNELS_COMPILED=1 timeout 150 python3 -m pytest -q -p no:cacheprovider --tb=short tests/test_kernels.py \
      -k "threshold or top_k or chunk_selection or landmark or in_place or exact_segments or partials_match" 2>&1 \
      | grep -E "passed|failed|Error|assert" | tail -6 | tee "$OUT/kernel_tests_anat35_h200.txt"
  L="8/64/4/3/0 8/64/4/3/1 8/64/4/2/0"
  timeout 100 python3 benchmarks/bench_kernels.py --contexts 122880 --batches 10 --placements device --launches $L \
      --repeats 10 --json "$OUT/kernels_anat35_h200.json" 2>&1 | grep "^| 122880" | cut -c1-140
  git apply benchmarks/patches/no_id_prefetch.patch || exit 1
  timeout 100 python3 benchmarks/bench_kernels.py --contexts 122880 --batches 10 --placements device --launches $L \
      --repeats 10 --json "$OUT/kernels_anat35_no_prefetch_h200.json" 2>&1 | grep "^| 122880" | cut -c1-140
  git apply -R benchmarks/patches/no_id_prefetch.patch || exit 1
  # (the reload was in the code when this ran, and is now benchmarks/patches/selection_id_reload.patch: not kept)
  git apply benchmarks/patches/selection_id_reload.patch || exit 1
  timeout 60 python3 benchmarks/bench_select.py --batch 10 --context 122880 --warps 16 \
      --json "$OUT/select_anat35_h200.json" 2>&1 | tail -1
  git apply -R benchmarks/patches/selection_id_reload.patch || exit 1
  timeout 60 python3 benchmarks/bench_select.py --batch 10 --context 122880 --warps 16 2>&1 | tail -1
  python3 benchmarks/pick_launch.py "$OUT/kernels_anat35_h200.json"
  BENCH_TIMEOUT=100 BTAIL=1 sk_device --context 122880 --batch 10 --json "$OUT/tput_llama_122880_shadowkv_anat35.json"
  git apply benchmarks/patches/no_id_prefetch.patch || exit 1
  BENCH_TIMEOUT=100 BTAIL=1 sk_device --context 122880 --batch 10 \
      --json "$OUT/tput_llama_122880_shadowkv_anat35_no_prefetch.json"
  git apply -R benchmarks/patches/no_id_prefetch.patch
  ;;
anat37)  # the kept version's selection and attention kernels under ncu (full set, SASS with stall samples)
  NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu | head -1)
  XLA_FLAGS=--xla_gpu_enable_command_buffer= timeout 300 $NCU --clock-control none -k regex:"selection|gather" \
      --launch-skip 2 --launch-count 2 --set full --import-source no -f -o /tmp/anat37 \
      python3 benchmarks/kernel_anatomy.py --calls 2 2>&1 | grep -v "^==PROF==" | tail -3
  $NCU -i /tmp/anat37.ncu-rep --page details --csv > "$OUT/ncu_anat37.csv" 2>&1
  python3 benchmarks/ncu_summary.py "$OUT/ncu_anat37.csv"
  $NCU -i /tmp/anat37.ncu-rep --page source --csv --print-source sass -k regex:selection \
      > "$OUT/ncu_sass_selection_anat37.csv" 2>&1
  $NCU -i /tmp/anat37.ncu-rep --page source --csv --print-source sass -k regex:gather \
      > "$OUT/ncu_sass_attention_anat37.csv" 2>&1; wc -l "$OUT"/*.csv
  ;;
qpre41)  # the attention kernel's last split stopping at the last block (kept) and the landmark kernel rotating q before
  # RoPE itself (benchmarks/patches/query_pre_in_landmark.patch, slower: not kept), as run: compiled tests with both,
  # ShadowKV at 122,880 x 10 with both, with the kept change alone, and with the rotation alone
  # (benchmarks/patches/padding_blocks.patch)
  git apply benchmarks/patches/query_pre_in_landmark.patch || exit 1
  SHADOWKV_KERNELS_COMPILED=1 timeout 200 python3 -m pytest -q -p no:cacheprovider --tb=short tests/test_kernels.py \
      -k "landmark or partials_match or exact_segments or in_place or blocks_are or w_loaded" 2>&1 | tail -3 \
      | tee "$OUT/kernel_tests_qpre41_h200.txt"
  BENCH_TIMEOUT=100 BTAIL=1 sk_device --context 122880 --batch 10 --json "$OUT/tput_llama_122880_shadowkv_qpre41.json"
  git apply -R benchmarks/patches/query_pre_in_landmark.patch
  BENCH_TIMEOUT=100 BTAIL=1 sk_device --context 122880 --batch 10 \
      --json "$OUT/tput_llama_122880_shadowkv_qpre41_query_after_rope.json"
  git apply benchmarks/patches/query_pre_in_landmark.patch benchmarks/patches/padding_blocks.patch || exit 1
  BENCH_TIMEOUT=100 BTAIL=1 sk_device --context 122880 --batch 10 \
      --json "$OUT/tput_llama_122880_shadowkv_qpre41_padding_blocks.json"
  git apply -R benchmarks/patches/query_pre_in_landmark.patch benchmarks/patches/padding_blocks.patch
  ;;
hit42)  # the kept version (no padding blocks) profiled, then ShadowKV at 122,880 x 10 without the per-layer hit rate
  # (benchmarks/patches/no_hit_rate.patch: a measurement of what it costs, not a change) and with 10 and 15 splits
  # of the attention kernel (30 blocks: 3 or 2 a split, none short)
  BENCH_TIMEOUT=150 BTAIL=1 sk_device --context 122880 --batch 10 --profile \
      --json "$OUT/prof_llama_122880_shadowkv_hit42.json"
  for p in no_hit_rate splits10 splits15; do
    git apply benchmarks/patches/$p.patch || exit 1
    BENCH_TIMEOUT=100 BTAIL=1 sk_device --context 122880 --batch 10 --json "$OUT/tput_llama_122880_shadowkv_hit42_$p.json"
    git apply -R benchmarks/patches/$p.patch
  done
  ;;
grp43)  # the layer scan over groups of 2 layers (benchmarks/patches/layer_groups.patch, --unroll-layers 2; much slower:
  # not kept), each group's weights one slice: ShadowKV at 122,880 x 10 and full attention at 122,880 x 6, with groups
  # of 1 and 2, on one machine
  git apply benchmarks/patches/layer_groups.patch || exit 1
  for u in 1 2; do
    BENCH_TIMEOUT=110 BTAIL=1 sk_device --context 122880 --batch 10 --unroll-layers $u \
        --json "$OUT/tput_llama_122880_shadowkv_grp43_u$u.json"
  done
  for u in 1 2; do
    BENCH_TIMEOUT=130 BTAIL=1 bench --model llama-3.1-8b --method full --batch 6 --steps 32 --context 122880 \
        --unroll-layers $u --json "$OUT/tput_llama_122880_full_grp43_u$u.json"
  done
  git apply -R benchmarks/patches/layer_groups.patch
  ;;
mem44a)  # the H100's allocator limit (82,468,405,248 bytes = 76.8 GiB, the 2026-11-27 rows), both methods, then the whole H200
  BENCH_TIMEOUT=130 BTAIL=2 sk_device --context 122880 --batch auto --gpu-memory-gb 76.8 \
      --json "$OUT/tput_llama_122880_shadowkv_h100mem_mem44.json"
  BENCH_TIMEOUT=140 BTAIL=2 full_auto --context 122880 --gpu-memory-gb 76.8 --json "$OUT/tput_llama_122880_full_h100mem_mem44.json"
  BENCH_TIMEOUT=130 BTAIL=2 sk_device --context 122880 --batch auto --json "$OUT/tput_llama_122880_shadowkv_mem44.json"
  ;;
mem44b)  # the whole H200: ShadowKV at 65,536, full attention at 122,880 (same machine as each other)
  BENCH_TIMEOUT=130 BTAIL=2 sk_device --context 65536 --batch auto --json "$OUT/tput_llama_65536_shadowkv_mem44.json"
  BENCH_TIMEOUT=140 BTAIL=2 full_auto --context 122880 --json "$OUT/tput_llama_122880_full_mem44.json"
  ;;
cb40)  # the command buffers' scheduling mode (decoding.DECODE_COMPILER_OPTIONS): CONCURRENT, then LHS and SERIALIZE
  # (benchmarks/patches/command_buffer_{lhs,serialize}.patch), ShadowKV at 122,880 x 10 on one machine
  BENCH_TIMEOUT=100 BTAIL=1 sk_device --context 122880 --batch 10 --json "$OUT/tput_llama_122880_shadowkv_cb40.json"
  for m in lhs serialize; do
    git apply benchmarks/patches/command_buffer_$m.patch || exit 1
    BENCH_TIMEOUT=100 BTAIL=1 sk_device --context 122880 --batch 10 \
        --json "$OUT/tput_llama_122880_shadowkv_cb40_$m.json"
    git apply -R benchmarks/patches/command_buffer_$m.patch
  done
  ;;
exact39)  # one program per (b, h) for all three exact segments, against one program each
  # (benchmarks/patches/exact_programs_before_exact39.patch): compiled tests, the kernel with the step's segments
  # (both layouts, a few launches), ShadowKV at 122,880 x 10 with and without
  SHADOWKV_KERNELS_COMPILED=1 timeout 170 python3 -m pytest -q -p no:cacheprovider --tb=short tests/test_kernels.py \
      -k "exact_segments or in_place or partials_match" 2>&1 | tail -3 | tee "$OUT/kernel_tests_exact39_h200.txt"
  KL="8/64/4/3/0 6/64/4/3/0 10/64/4/3/0 5/64/4/3/0"
  kern() { timeout 120 python3 benchmarks/bench_kernels.py --contexts 122880 --batches 10 --placements device \
      --budget 1920 --exact --launches $KL --repeats 10 --in-loop 32 --json "$1" 2>&1 | grep "^| 122880"; }
  kern "$OUT/kernels_exact39_h200.json"
  BENCH_TIMEOUT=100 BTAIL=1 sk_device --context 122880 --batch 10 --json "$OUT/tput_llama_122880_shadowkv_exact39.json"
  git apply benchmarks/patches/exact_programs_before_exact39.patch || exit 1
  KL="8/64/4/3/0" kern "$OUT/kernels_exact39_before_h200.json"
  BENCH_TIMEOUT=100 BTAIL=1 sk_device --context 122880 --batch 10 \
      --json "$OUT/tput_llama_122880_shadowkv_exact39_before.json"
  git apply -R benchmarks/patches/exact_programs_before_exact39.patch
  ;;
sel38)  # the selection's one packed prefix sum and its score rows padded to 16-byte vectors: compiled tests, the
  # selection paths with both and without (benchmarks/patches/selection_before_sel38.patch), ShadowKV at
  # 122,880 x 10 with both and without
  SHADOWKV_KERNELS_COMPILED=1 timeout 200 python3 -m pytest -q -p no:cacheprovider --tb=short tests/test_kernels.py \
      -k "threshold or top_k or chunk_selection or landmark" 2>&1 | tail -2 | tee "$OUT/kernel_tests_sel38_h200.txt"
  timeout 60 python3 benchmarks/bench_select.py --batch 10 --context 122880 --warps 16 \
      --json "$OUT/select_sel38_h200.json" 2>&1 | tail -1
  BENCH_TIMEOUT=100 BTAIL=1 sk_device --context 122880 --batch 10 --json "$OUT/tput_llama_122880_shadowkv_sel38.json"
  git apply benchmarks/patches/selection_before_sel38.patch || exit 1
  timeout 60 python3 benchmarks/bench_select.py --batch 10 --context 122880 --warps 16 2>&1 | tail -1
  BENCH_TIMEOUT=100 BTAIL=1 sk_device --context 122880 --batch 10 \
      --json "$OUT/tput_llama_122880_shadowkv_sel38_before.json"
  git apply -R benchmarks/patches/selection_before_sel38.patch
  ;;
final36a)  # the kept version (chunk ids a block ahead, 3 stages; the landmark kernel's loop launch): compiled tests,
  # then both methods at their largest batches at 122,880
  SHADOWKV_KERNELS_COMPILED=1 timeout 300 python3 -m pytest -q -p no:cacheprovider --tb=short tests/test_kernels.py \
      -k "threshold or top_k or chunk_selection or landmark or in_place or exact_segments or partials_match" 2>&1 \
      | tail -4 | tee "$OUT/kernel_tests_final36_h200.txt"
  BENCH_TIMEOUT=110 BTAIL=1 sk_device --context 122880 --batch auto --json "$OUT/tput_llama_122880_shadowkv_device.json"
  BENCH_TIMEOUT=130 BTAIL=1 full_auto --context 122880 --json "$OUT/tput_llama_122880_full.json"
  ;;
final36b)  # the same machine: ShadowKV at 65,536 and under an 80 GB cap, and its profiled step at 122,880 x 10
  BENCH_TIMEOUT=110 BTAIL=1 sk_device --context 65536 --batch auto --json "$OUT/tput_llama_65536_shadowkv_device.json"
  BENCH_TIMEOUT=100 BTAIL=1 sk_device --context 122880 --batch auto --gpu-memory-gb 80 \
      --json "$OUT/tput_llama_122880_shadowkv_device_80gb.json"
  BENCH_TIMEOUT=150 BTAIL=1 sk_device --context 122880 --batch 10 --profile \
      --json "$OUT/prof_llama_122880_shadowkv_final36.json"
  ;;
kept32)  # the kept version (the chains reverted): its kernels compiled and checked, ShadowKV at 122,880 x 10 profiled
  SHADOWKV_KERNELS_COMPILED=1 timeout 150 python3 -m pytest -q -p no:cacheprovider --tb=short tests/test_kernels.py \
      -k "threshold or top_k or chunk_selection or landmark or in_place or exact_segments or partials_match" 2>&1 \
      | grep -E "passed|failed|Error|assert" | tail -6 | tee "$OUT/kernel_tests_kept32_h200.txt"
  BENCH_TIMEOUT=150 BTAIL=1 sk_device --context 122880 --batch 10 --profile \
      --json "$OUT/prof_llama_122880_shadowkv_kept32.json"
  ;;
dev2)  # values on the GPU with the device launch (kernels/sparse_attention.DEVICE_VALUES_LAUNCH) and no value
  # reuse (with values in HBM a reuse cache only adds writes): ShadowKV and full attention at 122,880 in the same
  # session, ShadowKV at 65,536 and with the GPU limited to 80 GB, then the changed kernel's compiled tests
  BENCH_TIMEOUT=150 BTAIL=3 sk_device --context 122880 --batch auto \
      --json "$OUT/tput_llama_122880_shadowkv_device.json"
  BENCH_TIMEOUT=150 BTAIL=3 full_auto --context 122880 \
      --json "$OUT/tput_llama_122880_full.json"
  BENCH_TIMEOUT=120 BTAIL=3 sk_device --context 65536 --batch auto \
      --json "$OUT/tput_llama_65536_shadowkv_device.json"
  BENCH_TIMEOUT=120 BTAIL=3 sk_device --context 122880 --batch auto \
      --gpu-memory-gb 80 --json "$OUT/tput_llama_122880_shadowkv_device_80gb.json"
  SHADOWKV_KERNELS_COMPILED=1 timeout ${TEST_TIMEOUT:-90} python3 -m pytest -q -p no:cacheprovider --tb=short \
      tests/test_kernels.py -k "fp32 or bf16_error or blocks_are" 2>&1 | tee "$OUT/kernel_launch_tests.txt" \
      | grep -E "passed|failed|Error|assert" | tail -6
  ;;
tune1)  # launch shapes with device values: the attention kernel's splits/blocks/warps at 122,880 x 10 in a
  # 32-layer loop (a W loaded once per program, tried here, changed nothing and was dropped)
  KSPLITS="${KSPLITS:-8 16 32}" KBLOCKS="${KBLOCKS:-16 32}" KWARPS="${KWARPS:-4 8}" DEVFLAGS=skip \
      bash "$0" dev1 | grep -v "^usage\|error:"
  ;;
dev1)  # values on the GPU (no PCIe in the step): the fused kernel's splits/block/warps with device values at
  # 122,880 x 10 (one layer, in a compiled loop), then ShadowKV with device values at its largest batch (profiled)
  timeout 200 python3 benchmarks/bench_kernels.py --contexts 122880 --batches ${KB:-10} --placements device \
      --splits ${KSPLITS:-4 8 16} --block-tokens ${KBLOCKS:-16 32} --warps ${KWARPS:-4 8} --stages ${KSTAGES:-2} \
      --repeats 10 --in-loop 32 \
      --json "$OUT/kernels_device_sweep.json" 2>&1 | python3 -c "
import json, sys
for line in sys.stdin:
    if line.startswith('{'):
        r = json.loads(line)
        print(r.get('impl', 'pallas'), r.get('splits'), r.get('block_tokens'), r.get('warps'), r.get('stages'), round(r['ms'], 3),
              round(r.get('ms_in_loop', float('nan')), 3), 'err', r.get('max_abs_err_vs_reference'))
    elif 'measured' in line or 'Error' in line: print(line.strip())"
  [ "${DEVFLAGS:-}" = skip ] && exit 0
  BENCH_TIMEOUT=${BT:-300} BTAIL=16 bench --model llama-3.1-8b --context ${CTX:-122880} --method shadowkv --batch auto \
      --steps 32 --value-placement device --profile ${DEVFLAGS:-} --json "$OUT/tput_llama_${CTX:-122880}_shadowkv_device${TAG:-}.json"
  ;;
pipe2)  # the same options for full attention and for ShadowKV as one batch
  BENCH_TIMEOUT=150 BTAIL=8 full_auto --context 122880 \
      --json "$OUT/tput_llama_122k_full_concurrent.json"
  BENCH_TIMEOUT=250 BTAIL=8 bench --model llama-3.1-8b --context 122880 --method shadowkv --batch auto --steps 32 \
      --json "$OUT/tput_llama_122k_shadowkv_concurrent.json"
  ;;
prof)  # kernel time per step by scope (jax.profiler) at 122,880 tokens, each method at its largest batch
  BENCH_TIMEOUT=280 BTAIL=16 bench --model llama-3.1-8b --context 122880 --method shadowkv --batch auto --steps 16 \
      --profile --json "$OUT/prof_llama_122k_shadowkv.json"
  BENCH_TIMEOUT=150 BTAIL=16 bench --model llama-3.1-8b --context 122880 --method full --batch auto --steps 16 \
      --profile --json "$OUT/prof_llama_122k_full.json"
  ;;
prof2)  # after aligning the landmark axis: ShadowKV with the layer scan as is and unrolled by 8; full unrolled
  BENCH_TIMEOUT=200 BTAIL=16 bench --model llama-3.1-8b --context 122880 --method shadowkv --batch auto --steps 32 \
      --profile --json "$OUT/prof_llama_122k_shadowkv_aligned.json"
  BENCH_TIMEOUT=220 BTAIL=16 bench --model llama-3.1-8b --context 122880 --method shadowkv --batch auto --steps 32 \
      --unroll-layers 8 --profile --json "$OUT/prof_llama_122k_shadowkv_aligned_u8.json"
  BENCH_TIMEOUT=150 BTAIL=16 bench --model llama-3.1-8b --context 122880 --method full --batch auto --steps 32 \
      --unroll-layers 8 --profile --json "$OUT/prof_llama_122k_full_u8.json"
  ;;
sel3)  # landmark-score kernel: compiled kernel tests, 8B-shape agreement kernels vs jnp, ShadowKV and full at 122,880
  SHADOWKV_KERNELS_COMPILED=1 timeout 150 python3 -m pytest -q -p no:cacheprovider --tb=short tests/test_kernels.py 2>&1 \
      | grep -E "passed|failed|Error|assert" | tail -8
  timeout 120 python3 benchmarks/bench_shadowkv_decode.py --model llama-3.1-8b --context 32768 --batch 2 \
      --json "$OUT/decode_llama8b_scores_kernel_h100.json" 2>&1 | tail -4
  BENCH_TIMEOUT=200 BTAIL=12 bench --model llama-3.1-8b --context 122880 --method shadowkv --batch auto --steps 32 \
      --profile --json "$OUT/prof_llama_122k_shadowkv_scores_kernel.json"
  BENCH_TIMEOUT=120 BTAIL=8 bench --model llama-3.1-8b --context 122880 --method full --batch auto --steps 32 \
      --profile --json "$OUT/prof_llama_122k_full_b3.json"
  ;;
sel45)  # the selection kernel's exp as one exp2 and one divide a row (was libdevice's expf and a divide a slot,
  # benchmarks/patches/selection_expf_before_sel45.patch): compiled tests, bench_select with and without, ShadowKV at
  # 122,880 x 10 with and without, one machine
  SHADOWKV_KERNELS_COMPILED=1 timeout 150 python3 -m pytest -q -p no:cacheprovider --tb=short tests/test_kernels.py \
      -k "chunk_selection or top_k or threshold" 2>&1 | grep -E "passed|failed|Error|assert" | tail -4 \
      | tee "$OUT/kernel_tests_sel45_h200.txt"
  timeout 120 python3 benchmarks/bench_select.py --batch 10 --context 122880 --json "$OUT/select_sel45_h200.json" 2>&1 \
      | tail -6
  BENCH_TIMEOUT=100 BTAIL=1 sk_device --context 122880 --batch 10 --json "$OUT/tput_llama_122880_shadowkv_sel45.json"
  git apply benchmarks/patches/selection_expf_before_sel45.patch || exit 1
  timeout 120 python3 benchmarks/bench_select.py --batch 10 --context 122880 --warps 16 \
      --json "$OUT/select_sel45_before_h200.json" 2>&1 | tail -3
  BENCH_TIMEOUT=100 BTAIL=1 sk_device --context 122880 --batch 10 --json "$OUT/tput_llama_122880_shadowkv_sel45_before.json"
  git apply -R benchmarks/patches/selection_expf_before_sel45.patch
  ;;
spl46)  # the attention kernel's splits at other batches than 122,880 x 10 (where 8 is kept): 122,880 x 5 (the
  # batch under an H100's memory) with 8, 15, 10 and 4 splits, 65,536 x 20 (16 blocks: 8 splits of 2) with 8 and 4
  # (benchmarks/patches/splits{15,10,4}.patch), one machine
  for p in none splits15 splits10 splits4; do
    [ $p = none ] || git apply benchmarks/patches/$p.patch || exit 1
    BENCH_TIMEOUT=90 BTAIL=1 sk_device --context 122880 --batch 5 --json "$OUT/tput_llama_122880_shadowkv_spl46_b5_$p.json"
    [ $p = none ] || git apply -R benchmarks/patches/$p.patch
  done
  for p in none splits4; do
    [ $p = none ] || git apply benchmarks/patches/$p.patch || exit 1
    BENCH_TIMEOUT=100 BTAIL=1 sk_device --context 65536 --batch 20 --json "$OUT/tput_llama_65536_shadowkv_spl46_b20_$p.json"
    [ $p = none ] || git apply -R benchmarks/patches/$p.patch
  done
  ;;
spl47)  # the kept launch rule (kernels/sparse_attention.device_values_launch: splits of 4 blocks or more): compiled
  # tests, ShadowKV at 65,536 x 20 (122,880's launch is unchanged), then both methods at 65,536 under an H100's
  # allocator limit
  SHADOWKV_KERNELS_COMPILED=1 timeout 150 python3 -m pytest -q -p no:cacheprovider --tb=short tests/test_kernels.py \
      -k "partials_match or exact_segments or in_place or device_values_launch or blocks_are" 2>&1 \
      | grep -E "passed|failed|Error|assert" | tail -4 | tee "$OUT/kernel_tests_spl47_h200.txt"
  BENCH_TIMEOUT=100 BTAIL=1 sk_device --context 65536 --batch 20 --json "$OUT/tput_llama_65536_shadowkv_spl47.json"
  BENCH_TIMEOUT=100 BTAIL=1 sk_device --context 65536 --batch auto --gpu-memory-gb 76.8 \
      --json "$OUT/tput_llama_65536_shadowkv_h100mem_spl47.json"
  BENCH_TIMEOUT=150 BTAIL=1 full_auto --context 65536 --gpu-memory-gb 76.8 --json "$OUT/tput_llama_65536_full_h100mem_spl47.json"
  ;;
ul48)  # the step over per-layer weight arrays (--layer-weights per-layer: the layers in a Python loop, no layer scan,
  # so no loop boundary between layers) against the layer scan, one machine: ShadowKV at 122,880 under an H100's
  # allocator limit (batch 5, profiled with per-layer weights), then full attention there (batch 3). The per-layer copy
  # of the weights is not planned for: the H200 has room for it beside these batches. Not kept: the per-layer rows
  # run with benchmarks/patches/per_layer_weights.patch applied.
  BENCH_TIMEOUT=100 BTAIL=1 sk_device --context 122880 --batch auto --gpu-memory-gb 76.8 \
      --json "$OUT/tput_llama_122880_shadowkv_h100mem_ul48_stacked.json"
  git apply benchmarks/patches/per_layer_weights.patch || exit 1
  BENCH_TIMEOUT=220 BTAIL=1 sk_device --context 122880 --batch auto --gpu-memory-gb 76.8 --layer-weights per-layer \
      --profile --json "$OUT/tput_llama_122880_shadowkv_h100mem_ul48_perlayer.json"
  BENCH_TIMEOUT=200 BTAIL=1 full_auto --context 122880 --gpu-memory-gb 76.8 --layer-weights per-layer \
      --json "$OUT/tput_llama_122880_full_h100mem_ul48_perlayer.json"
  git apply -R benchmarks/patches/per_layer_weights.patch
  python3 benchmarks/summarize_rows.py "$OUT"/tput_*ul48*.json
  ;;
wav49)  # the attention kernel's launch at 122,880 x 5 (the batch under an H100's memory: 40 (b, h), so 360 programs
  # of one per SM, in 3 waves) and x 10, in a 32-call loop with the exact segments: 3, 2 and 1 pipeline stages (1
  # stage and 32-token blocks fit two programs per SM), fewer or more splits; then the selection kernel's warps at x 5
  python3 benchmarks/bench_kernels.py --contexts 122880 --batches 5 10 --placements device --budget 1920 --exact \
      --launches 8/64/4/3/0 8/64/4/2/0 8/64/4/1/0 4/64/4/1/0 5/64/4/3/0 10/64/4/1/0 8/32/4/2/0 15/32/4/2/0 \
      15/32/4/1/0 --json "$OUT/kernels_wav49_h200.json" 2>&1 | grep -v -i "deprecat\|warn" | tail -26
  python3 benchmarks/bench_select.py --batch 5 --warps 8 16 32 --json "$OUT/select_wav49_b5_h200.json" 2>&1 | tail -7
  ;;
sta50)  # the two launches that wav49's loop timed fastest at 122,880 x 5 (2 stages; 5 splits), in the step, one machine,
  # the kept launch first and last (benchmarks/patches/{stages2,splits5}.patch)
  for p in none stages2 splits5 none; do  # (the second "none" row overwrites the first one's JSON)
    [ $p = none ] || git apply benchmarks/patches/$p.patch || exit 1
    BENCH_TIMEOUT=90 BTAIL=1 sk_device --context 122880 --batch 5 --json "$OUT/tput_llama_122880_shadowkv_sta50_b5_$p.json"
    [ $p = none ] || git apply -R benchmarks/patches/$p.patch
  done
  python3 benchmarks/summarize_rows.py "$OUT"/tput_*sta50*.json
  ;;
row51)  # decode rows padded to a multiple of 16 rather than 8 (kept; benchmarks/patches/rows8_before_row51.patch takes
  # the kept code back to 8): in ul48's profile at 122,880 x 5 (8 rows) cuBLAS ran the q, o and down projections as
  # split-K GEMMs, each with a reduce kernel after it, where at 16 rows (batch 10) it ran them in one kernel. One
  # machine: ShadowKV at x 5 with 8 rows, then with 16 (profiled), full attention under 76.8 GiB (3 rows) and ShadowKV
  # at 65,536 x 20 (32 rows, not 24)
  git apply benchmarks/patches/rows8_before_row51.patch || exit 1
  BENCH_TIMEOUT=90 BTAIL=1 sk_device --context 122880 --batch 5 --json "$OUT/tput_llama_122880_shadowkv_row51_b5_rows8.json"
  git apply -R benchmarks/patches/rows8_before_row51.patch
  BENCH_TIMEOUT=110 BTAIL=1 sk_device --context 122880 --batch 5 --profile \
      --json "$OUT/tput_llama_122880_shadowkv_row51_b5_rows16.json"
  BENCH_TIMEOUT=150 BTAIL=1 full_auto --context 122880 --gpu-memory-gb 76.8 \
      --json "$OUT/tput_llama_122880_full_h100mem_row51_rows16.json"
  BENCH_TIMEOUT=100 BTAIL=1 sk_device --context 65536 --batch 20 --json "$OUT/tput_llama_65536_shadowkv_row51_b20_rows16.json"
  python3 benchmarks/summarize_rows.py "$OUT"/tput_*row51*.json
  python3 -c "
import json, sys
p = json.load(open('$OUT/tput_llama_122880_shadowkv_row51_b5_rows16.json'))['rows'][0]['profile']
for k in p['kernels'][:12]: print(round(k['ms'], 3), int(k['launches']), k['kernel'][:60])"
  ;;
fin52)  # the HBM probe (throughput.measure_bandwidths) in 6 fresh processes: one call a run, cold (as before), against 8
  # queued calls a run after 1 s of warm-up (kept); then the kept code: both methods at 122,880 under an H100's
  # allocator limit, ShadowKV on the whole H200
  for i in 1 2 3; do
    for mode in "calls=1, warmup_s=0" ""; do
      python3 -c "
from shadowkv_jax.throughput import measure_bandwidths as m
r = m($mode)
print('probe ($mode):', round(r['hbm_read_bytes_per_s'] / 1e12, 3), 'TB/s best,', round(r['hbm_read_median_bytes_per_s'] / 1e12, 3), 'median')" \
        2>&1 | grep probe | tee -a "$OUT/probe_fin52_h200.txt"
    done
  done
  BENCH_TIMEOUT=90 BTAIL=1 sk_device --context 122880 --batch auto --gpu-memory-gb 76.8 \
      --json "$OUT/tput_llama_122880_shadowkv_h100mem_fin52.json"
  BENCH_TIMEOUT=150 BTAIL=1 full_auto --context 122880 --gpu-memory-gb 76.8 --json "$OUT/tput_llama_122880_full_h100mem_fin52.json"
  BENCH_TIMEOUT=100 BTAIL=1 sk_device --context 122880 --batch auto --json "$OUT/tput_llama_122880_shadowkv_fin52.json"
  python3 benchmarks/summarize_rows.py "$OUT"/tput_*fin52*.json
  ;;
fin53)  # the kept code's ShadowKV rows at 65,536 tokens with the new probe: under an H100's allocator limit, whole H200
  BENCH_TIMEOUT=90 BTAIL=1 sk_device --context 65536 --batch auto --gpu-memory-gb 76.8 \
      --json "$OUT/tput_llama_65536_shadowkv_h100mem_fin53.json"
  BENCH_TIMEOUT=100 BTAIL=1 sk_device --context 65536 --batch auto --json "$OUT/tput_llama_65536_shadowkv_fin53.json"
  python3 benchmarks/summarize_rows.py "$OUT"/tput_*fin53*.json
  ;;
rad54)  # the threshold search two bits a pass from the bits the row's lowest and highest keys share
  # (benchmarks/patches/threshold_radix2.patch; slower, not kept): compiled tests, bench_select at 122,880 x 5 and
  # x 10 with and without, ShadowKV at 122,880 x 5 with, without, with (profiled)
  git apply benchmarks/patches/threshold_radix2.patch || exit 1
  SHADOWKV_KERNELS_COMPILED=1 timeout 150 python3 -m pytest -q -p no:cacheprovider --tb=short tests/test_kernels.py \
      -k "chunk_selection or top_k or threshold" 2>&1 | grep -E "passed|failed|Error|assert" | tail -4 \
      | tee "$OUT/kernel_tests_rad54_h200.txt"
  for b in 5 10; do
    timeout 100 python3 benchmarks/bench_select.py --batch $b --context 122880 --warps 8 16 \
        --json "$OUT/select_rad54_b${b}_h200.json" 2>&1 | tail -5
  done
  BENCH_TIMEOUT=90 BTAIL=1 sk_device --context 122880 --batch 5 --json "$OUT/tput_llama_122880_shadowkv_rad54_b5.json"
  git apply -R benchmarks/patches/threshold_radix2.patch
  for b in 5 10; do
    timeout 100 python3 benchmarks/bench_select.py --batch $b --context 122880 --warps 16 \
        --json "$OUT/select_rad54_b${b}_before_h200.json" 2>&1 | tail -2
  done
  BENCH_TIMEOUT=90 BTAIL=1 sk_device --context 122880 --batch 5 --json "$OUT/tput_llama_122880_shadowkv_rad54_b5_before.json"
  git apply benchmarks/patches/threshold_radix2.patch || exit 1
  BENCH_TIMEOUT=110 BTAIL=1 sk_device --context 122880 --batch 5 --profile \
      --json "$OUT/tput_llama_122880_shadowkv_rad54_b5_again.json"
  git apply -R benchmarks/patches/threshold_radix2.patch
  python3 benchmarks/summarize_rows.py "$OUT"/tput_*rad54*.json
  python3 -c "
import json
p = json.load(open('$OUT/tput_llama_122880_shadowkv_rad54_b5_again.json'))['rows'][0]['profile']
for k in p['kernels'][:12]: print(round(k['ms'], 3), int(k['launches']), k['kernel'][:60])"
  ;;
l32_55)  # the attention kernel's device-values launch with 32-token blocks in 15 splits, 2 or 3 pipeline stages
  # (benchmarks/patches/launch32.patch, launch32s3.patch; 2 stages: 0.065 against the kept 0.071 ms a call at
  # 122,880 x 5 in wav49's loop, not yet in the step): ShadowKV at 122,880 x 5 (the kept launch first and last), one machine
  for run in none_1 launch32_1 launch32s3_1 none_2; do
    p=${run%_*}
    [ $p = none ] || git apply benchmarks/patches/$p.patch || exit 1
    BENCH_TIMEOUT=90 BTAIL=1 sk_device --context 122880 --batch 5 --json "$OUT/tput_llama_122880_shadowkv_l32_55_b5_$run.json"
    [ $p = none ] || git apply -R benchmarks/patches/$p.patch
  done
  python3 benchmarks/summarize_rows.py "$OUT"/tput_*l32_55*.json
  ;;
sps56)  # on commit dcfe7c2 only: the split selection (kernels/chunk_selection.select_top_chunks_split; without it:
  # benchmarks/patches/no_split_selection.patch): compiled tests, bench_select at 122,880 x 5 and x 10 (every split
  # count and the one-kernel selection), then ShadowKV at 122,880 x 5 without, with, without, with (profiled), x 10
  SHADOWKV_KERNELS_COMPILED=1 timeout 150 python3 -m pytest -q -p no:cacheprovider --tb=short tests/test_kernels.py \
      -k "chunk_selection or split_selection or statistics or landmark or top_k or threshold" 2>&1 \
      | grep -E "passed|failed|Error|assert" | tail -6 | tee "$OUT/kernel_tests_sps56_h200.txt"
  for b in 5 10; do
    timeout 100 python3 benchmarks/bench_select.py --batch $b --context 122880 --warps 16 --splits 2 4 8 \
        --json "$OUT/select_sps56_b${b}_h200.json" 2>&1 | tail -7
  done
  for run in none_1 split_1 none_2 split_2; do
    [ ${run%_*} = none ] && { git apply benchmarks/patches/no_split_selection.patch || exit 1; }
    extra=""; [ $run = split_2 ] && extra=--profile
    BENCH_TIMEOUT=110 BTAIL=1 sk_device --context 122880 --batch 5 $extra \
        --json "$OUT/tput_llama_122880_shadowkv_sps56_b5_$run.json"
    [ ${run%_*} = none ] && git apply -R benchmarks/patches/no_split_selection.patch
  done
  BENCH_TIMEOUT=90 BTAIL=1 sk_device --context 122880 --batch 10 --json "$OUT/tput_llama_122880_shadowkv_sps56_b10_split.json"
  git apply benchmarks/patches/no_split_selection.patch || exit 1
  BENCH_TIMEOUT=90 BTAIL=1 sk_device --context 122880 --batch 10 --json "$OUT/tput_llama_122880_shadowkv_sps56_b10_none.json"
  git apply -R benchmarks/patches/no_split_selection.patch
  python3 benchmarks/summarize_rows.py "$OUT"/tput_*sps56*.json
  python3 -c "
import json
p = json.load(open('$OUT/tput_llama_122880_shadowkv_sps56_b5_split_2.json'))['rows'][0]['profile']
for k in p['kernels'][:14]: print(round(k['ms'], 3), int(k['launches']), k['kernel'][:60])"
  ;;
sps57)  # the split selection below 64 rows, with the landmark kernel's statistics kept per lane (sps56's profile:
  # the landmark kernel 49.5 us a layer with statistics reduced per block, ~42 without them)
  SHADOWKV_KERNELS_COMPILED=1 timeout 150 python3 -m pytest -q -p no:cacheprovider --tb=short tests/test_kernels.py \
      -k "chunk_selection or split_selection or statistics or landmark or top_k or threshold" 2>&1 \
      | grep -E "passed|failed|Error|assert" | tail -6 | tee "$OUT/kernel_tests_sps57_h200.txt"
  timeout 100 python3 benchmarks/bench_select.py --batch 5 --context 122880 --warps 16 --splits 4 8 \
      --json "$OUT/select_sps57_b5_h200.json" 2>&1 | tail -6
  for run in none_1 split_1 none_2 split_2; do
    [ ${run%_*} = none ] && { git apply benchmarks/patches/no_split_selection.patch || exit 1; }
    extra=""; [ $run = split_2 ] && extra=--profile
    BENCH_TIMEOUT=110 BTAIL=1 sk_device --context 122880 --batch 5 $extra \
        --json "$OUT/tput_llama_122880_shadowkv_sps57_b5_$run.json"
    [ ${run%_*} = none ] && git apply -R benchmarks/patches/no_split_selection.patch
  done
  python3 benchmarks/summarize_rows.py "$OUT"/tput_*sps57*.json
  python3 -c "
import json
p = json.load(open('$OUT/tput_llama_122880_shadowkv_sps57_b5_split_2.json'))['rows'][0]['profile']
for k in p['kernels'][:10]: print(round(k['ms'], 3), int(k['launches']), k['kernel'][:60])"
  ;;
l2p58)  # the output projection prefetched into L2 (evict_last loads) while the selection runs
  git apply benchmarks/patches/l2_prefetch.patch || exit 1
  python3 -c "
import jax, jax.numpy as jnp, numpy as np
from shadowkv_jax.kernels.l2_prefetch import prefetch_layer
w = jax.random.normal(jax.random.key(0), (3, 4096, 4096), jnp.bfloat16)
got = float(prefetch_layer(w, jnp.int32(2), jnp.zeros(4)).sum()); want = float(w[2].astype(jnp.float32).sum())
print('prefetch sum', got, want, abs(got - want) < 1e-2 * (1 + abs(want)))" 2>&1 | tail -1 | tee "$OUT/prefetch_check_l2p58.txt"
  git apply -R benchmarks/patches/l2_prefetch.patch
  for run in none_1 pf_1 none_2 pf_2; do
    [ ${run%_*} = pf ] && { git apply benchmarks/patches/l2_prefetch.patch || exit 1; }
    extra=""; [ $run = pf_2 ] && extra=--profile
    BENCH_TIMEOUT=110 BTAIL=1 sk_device --context 122880 --batch 5 $extra \
        --json "$OUT/tput_llama_122880_shadowkv_l2p58_b5_$run.json"
    [ ${run%_*} = pf ] && git apply -R benchmarks/patches/l2_prefetch.patch
  done
  git apply benchmarks/patches/l2_prefetch.patch || exit 1
  BENCH_TIMEOUT=90 BTAIL=1 sk_device --context 122880 --batch 10 --json "$OUT/tput_llama_122880_shadowkv_l2p58_b10_pf.json"
  git apply -R benchmarks/patches/l2_prefetch.patch
  BENCH_TIMEOUT=90 BTAIL=1 sk_device --context 122880 --batch 10 --json "$OUT/tput_llama_122880_shadowkv_l2p58_b10_none.json"
  python3 benchmarks/summarize_rows.py "$OUT"/tput_*l2p58*.json
  python3 -c "
import json
p = json.load(open('$OUT/tput_llama_122880_shadowkv_l2p58_b5_pf_2.json'))['rows'][0]['profile']
for k in p['kernels'][:12]: print(round(k['ms'], 3), int(k['launches']), k['kernel'][:60])"
  ;;
h100a)  # the GPU and its allocator limit; both methods at 122,880 tokens at each one's largest batch on the whole
  # H100 (no --gpu-memory-gb: the device's own limit), ShadowKV profiled
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.max.mem --format=csv | tee "$OUT/gpu_h100a.txt"
  XLA_PYTHON_CLIENT_PREALLOCATE=true XLA_PYTHON_CLIENT_MEM_FRACTION=0.97 python3 -c "
import jax; d = jax.devices()[0]
print('jax', jax.__version__, d.device_kind, 'bytes_limit', d.memory_stats()['bytes_limit'])" 2>&1 | tail -1 \
      | tee -a "$OUT/gpu_h100a.txt"
  BENCH_TIMEOUT=200 BTAIL=1 sk_device --context 122880 --batch auto --profile \
      --json "$OUT/tput_llama_122880_shadowkv_h100a.json"
  BENCH_TIMEOUT=240 BTAIL=1 full_auto --context 122880 --json "$OUT/tput_llama_122880_full_h100a.json"
  python3 benchmarks/summarize_rows.py "$OUT"/tput_*h100a*.json
  python3 -c "
import json
p = json.load(open('$OUT/tput_llama_122880_shadowkv_h100a.json'))['rows'][0]['profile']
for k in p['kernels'][:12]: print(round(k['ms'], 3), int(k['launches']), k['kernel'][:60])"
  ;;
h100b)  # both methods at 65,536 tokens at each one's largest batch; ours and PyTorch's full attention at 32,768 x 4
  BENCH_TIMEOUT=150 BTAIL=1 sk_device --context 65536 --batch auto --json "$OUT/tput_llama_65536_shadowkv_h100b.json"
  BENCH_TIMEOUT=200 BTAIL=1 full_auto --context 65536 --json "$OUT/tput_llama_65536_full_h100b.json"
  BENCH_TIMEOUT=120 BTAIL=1 bench --model llama-3.1-8b --method full --context 32768 --batch 4 --steps 32 \
      --json "$OUT/tput_llama_32768_full_b4_h100b.json"
  timeout 200 python3 benchmarks/torch_baseline.py --shape llama-3.1-8b --context 32768 --batch 4 --steps 32 \
      --warmup 4 --compile both --json "$OUT/torch_llama_32k_b4_h100b.json" 2>&1 | tail -5
  python3 benchmarks/summarize_rows.py "$OUT"/tput_*h100b*.json
  ;;
h100c)  # the kernels compiled and checked against their references on the H100; ShadowKV at 122,880 again, with
  # the step's breakdown (without attention, selection only)
  SHADOWKV_KERNELS_COMPILED=1 timeout 300 python3 -m pytest -q -p no:cacheprovider --tb=short tests/test_kernels.py \
      > "$OUT/kernel_tests_h100c.txt" 2>&1; grep -E "passed|failed|Error" "$OUT/kernel_tests_h100c.txt" | tail -6
  BENCH_TIMEOUT=220 BTAIL=1 sk_device --context 122880 --batch auto --breakdown \
      --json "$OUT/tput_llama_122880_shadowkv_h100c.json"
  python3 benchmarks/summarize_rows.py "$OUT"/tput_*h100c*.json
  ;;
h100d)  # the split selection of sps57 (not kept on the H200: at most 1.2% at x 5), kept after this stage on the H100:
  # compiled tests, then ShadowKV at 122,880 x 5 without, with, without, with, one machine. Ran with the split applied
  # for its "split" rows; from the kept code, benchmarks/patches/selection_before_h100d.patch gives the "none" rows
  SHADOWKV_KERNELS_COMPILED=1 timeout 200 python3 -m pytest -q -p no:cacheprovider --tb=short tests/test_kernels.py \
      -k "chunk_selection or split_selection or statistics or landmark or top_k or threshold" 2>&1 \
      | grep -E "passed|failed|Error|assert" | tail -6 | tee "$OUT/kernel_tests_h100d.txt"
  for run in none_1 split_1 none_2 split_2; do
    [ ${run%_*} = none ] && { git apply benchmarks/patches/selection_before_h100d.patch || exit 1; }
    BENCH_TIMEOUT=110 BTAIL=1 sk_device --context 122880 --batch 5 --json "$OUT/tput_llama_122880_shadowkv_h100d_b5_$run.json"
    [ ${run%_*} = none ] && git apply -R benchmarks/patches/selection_before_h100d.patch
  done
  python3 benchmarks/summarize_rows.py "$OUT"/tput_*h100d*.json
  ;;
esac
