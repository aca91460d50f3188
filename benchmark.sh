#!/usr/bin/env bash
# Benchmark grid in CleanRL's style: scripts x datasets x seeds x {pretrained, scratch}.
#
#   bash benchmark.sh PROFILE [--dry-run]
#
# PROFILE: paper  the paper's MuJoCo experiment (hopper/halfcheetah/walker2d medium, TD3+BC and
#                 EDAC, pretrained vs scratch, 3 seeds, 1M updates, 50k pretraining)
#          adroit Table 2's grid (4 scripts x pen/door/hammer/relocate human+cloned, paper protocol,
#                 300k updates, 200k pretraining, evaluation every 10k)
#          quick  one dataset, both families, small budget (about 30 minutes on 2 cores)
#          speed  updates/s of every script's pretraining and finetuning, and the straightforward
#                 reference loops (tools/speed_reference.py)
# Settings (environment variables):
#   BENCH_DATASETS  space-separated dataset ids/short names (default per profile; e.g.
#                   "local/hopper/medium-v0" with MINARI_DATASETS_PATH for ../shared/datasets replicas)
#   BENCH_SEEDS     space-separated seeds (paper/adroit: "1 2 3", quick: "1")
#   BENCH_JOBS      runs at once (default: the number of cores); with more than one, each run gets
#                   one torch thread (OMP_NUM_THREADS=1)
#   BENCH_OUT       output folder (default bench/PROFILE): runs/, logs/, summary.md, PNG plots
#   BENCH_SCRIPTS   space-separated scripts to run, a subset of the profile's (e.g. "td3bc_pretrain")
#   BENCH_TOTAL     updates per run, pretraining included (default per profile/script)
#   BENCH_PRETRAIN  pretraining updates of the pretrained runs (default per profile/script)
# Each run logs to BENCH_OUT/logs/NAME.log. Re-running skips finished runs and resumes interrupted
# ones from their last checkpoint. At the end, tools/summarize.py writes the table and the plots.
set -euo pipefail
cd "$(dirname "$0")"
export PYTHONUNBUFFERED=1  # run logs show each evaluation as it happens

profile="${1:-}"
dry_run=0
[ "${2:-}" = "--dry-run" ] && dry_run=1
case "$profile" in
  paper)
    datasets="${BENCH_DATASETS:-hopper-medium halfcheetah-medium walker2d-medium}"
    seeds="${BENCH_SEEDS:-1 2 3}"
    scripts="td3bc_pretrain edac_pretrain"
    common="--eval-freq 5000"
    ;;
  adroit)
    datasets="${BENCH_DATASETS:-pen-human door-human hammer-human relocate-human pen-cloned door-cloned hammer-cloned relocate-cloned}"
    seeds="${BENCH_SEEDS:-1 2 3}"
    scripts="td3bc_pretrain td3bc_cql_pretrain edac_pretrain edac_bc_pretrain"
    common="--eval-protocol paper --eval-freq 10000"
    ;;
  quick)
    datasets="${BENCH_DATASETS:-local/hopper/medium-v0}"
    seeds="${BENCH_SEEDS:-1}"
    scripts="td3bc_pretrain edac_pretrain"
    common="--eval-freq 2500 --eval-episodes 5"
    ;;
  speed)
    datasets="${BENCH_DATASETS:-local/hopper/medium-v0}"
    ;;
  *)
    echo "usage: bash benchmark.sh paper|adroit|quick|speed [--dry-run]" >&2
    exit 2
    ;;
esac
if [ -n "${BENCH_SCRIPTS:-}" ]; then
  for script in $BENCH_SCRIPTS; do
    if ! grep -qw -- "${script%.py}" <<<"$scripts"; then
      echo "BENCH_SCRIPTS: '$script' is not in the $profile profile (it runs: $scripts)" >&2
      exit 2
    fi
  done
  scripts="${BENCH_SCRIPTS//.py/}"
fi
for var in BENCH_TOTAL BENCH_PRETRAIN; do
  if [ -n "${!var:-}" ] && ! [[ "${!var}" =~ ^[0-9]+$ ]]; then
    echo "$var must be a whole number of updates (got '${!var}')" >&2
    exit 2
  fi
done
out="${BENCH_OUT:-bench/$profile}"
jobs="${BENCH_JOBS:-$(nproc)}"
threads=""
[ "$jobs" -gt 1 ] && threads="OMP_NUM_THREADS=1"

# per-script flags of a profile, its total updates and its pretraining length
# (empty: the script's task default; BENCH_TOTAL / BENCH_PRETRAIN override)
extra_flags() {  # script
  case "$profile:$1" in
    quick:edac_pretrain) echo "--num-critics 10" ;;
  esac
}
total_steps() {  # script
  if [ -n "${BENCH_TOTAL:-}" ]; then echo "$BENCH_TOTAL"; return; fi
  case "$profile:$1" in
    paper:*) echo 1000000 ;;
    quick:td3bc_pretrain) echo 20000 ;;
    quick:edac_pretrain) echo 5000 ;;
  esac
}
pretrain_steps() {  # script
  if [ -n "${BENCH_PRETRAIN:-}" ]; then echo "$BENCH_PRETRAIN"; return; fi
  case "$profile:$1" in
    paper:*) echo 50000 ;;
    quick:td3bc_pretrain) echo 5000 ;;
    quick:edac_pretrain) echo 2500 ;;
  esac
}

if [ "$profile" = speed ]; then
  dataset="${datasets%% *}"
  mkdir -p "$out"
  speed_runs=(
    "td3bc_pretrain finetune --pretrain-steps 0 --total-timesteps 3000"
    "td3bc_pretrain pretrain --pretrain-steps 3000 --total-timesteps 3000"
    "edac_pretrain finetune-N10 --pretrain-steps 0 --total-timesteps 60 --num-critics 10"
    "edac_pretrain finetune-N50 --pretrain-steps 0 --total-timesteps 30 --num-critics 50"
    "edac_pretrain critic-pretrain-N10 --pretrain-steps 60 --pretrain-mode critic --total-timesteps 60 --num-critics 10"
  )
  for spec in "${speed_runs[@]}"; do
    read -r script label flags <<<"$spec"
    total=$(sed -E 's/.*--total-timesteps ([0-9]+).*/\1/' <<<"$flags")
    cmd="python $script.py --env-id $dataset $flags --eval-freq $total --log-freq $((total / 3)) --eval-episodes 1 --runs-dir $out/runs"
    if [ "$dry_run" = 1 ]; then echo "would run: $cmd"; continue; fi
    ups=$($cmd 2>&1 | grep -E "^\[(pretrain|finetune)\] update $total/" | sed -E 's/.*\| ([0-9.]+) updates\/s.*/\1/')
    printf '| %s | %s | %s updates/s |\n' "$script" "$label" "${ups:-failed}"
  done
  for spec in "td3bc" "edac --num-critics 10" "edac --num-critics 50 --steps 5"; do
    cmd="python tools/speed_reference.py --algo $spec"
    if [ "$dry_run" = 1 ]; then echo "would run: $cmd"; else $cmd; fi
  done
  exit 0
fi

mkdir -p "$out/runs" "$out/logs"
running=0
for dataset in $datasets; do
  for script in $scripts; do
    for seed in $seeds; do
      for variant in pretrained scratch; do
        name="${dataset//\//-}__${script}__${variant}__${seed}"
        run_root="$out/runs/$name"
        steps=$(pretrain_steps "$script")
        [ "$variant" = scratch ] && steps=0
        total=$(total_steps "$script")
        flags="--env-id $dataset --seed $seed $common $(extra_flags "$script") ${total:+--total-timesteps $total} ${steps:+--pretrain-steps $steps} --save-model --runs-dir $run_root"
        if compgen -G "$run_root/*/summary.csv" >/dev/null; then
          echo "done already: $name"
          continue
        fi
        existing=$(compgen -G "$run_root/*/checkpoint.pt" | head -n 1 || true)
        if [ -n "$existing" ]; then
          cmd="python $script.py --resume $(dirname "$existing")"
        else
          cmd="python $script.py $flags"
        fi
        if [ "$dry_run" = 1 ]; then
          echo "would run: $threads $cmd > $out/logs/$name.log"
          continue
        fi
        echo "start: $name"
        (env $threads $cmd > "$out/logs/$name.log" 2>&1 || echo "FAILED: $name (see $out/logs/$name.log)") &
        running=$((running + 1))
        if [ "$running" -ge "$jobs" ]; then
          wait -n || true
          running=$((running - 1))
        fi
      done
    done
  done
done
[ "$dry_run" = 1 ] && exit 0
wait
python tools/summarize.py "$out/runs" --out "$out"
