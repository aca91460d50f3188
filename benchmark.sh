#!/usr/bin/env bash
# Benchmark grid in CleanRL's style: scripts x datasets x seeds x {pretrained, scratch}.
#
#   bash benchmark.sh [PROFILE] [--dry-run]       run a grid here (PROFILE defaults to paper)
#   BENCH_LAUNCHER=slurm bash benchmark.sh PROFILE [--dry-run]
#                                                  submit the grid as one SLURM array job
#   bash benchmark.sh summarize BENCH_OUT [MORE ...] table, plots, Figure 2 and rliable aggregates of a grid
#                                                  (reach: where a curve stays above, one evaluation's dip allowed),
#                                                  written to BENCH_OUT; MORE grids' runs join it (one figure)
#
# PROFILE: paper  the paper's MuJoCo experiment (hopper/halfcheetah/walker2d medium, TD3+BC and
#                 EDAC, pretrained vs scratch, 3 seeds, 1M updates, 50k pretraining)
#          figure2 Figure 2 at the budget a 2-core CPU affords: hopper/halfcheetah/walker2d medium, TD3+BC
#                 300k updates (50k pretraining, evaluation every 5k) and EDAC N=10 --bf16 60k updates (20k
#                 pretraining, evaluation every 2k), pretrained vs scratch, 3 seeds, 100 final episodes;
#                 then EDAC+BC (edac_bc_pretrain.py, same budget) pretrained, seeds BENCH_REMEDY_SEEDS
#                 (default "1 2"), summarized against EDAC's scratch runs: 42 runs
#          figure2-v1 Figure 2's TD3+BC row at the authors' budgets on SAC-made medium data (default
#                 local/<task>/medium-v1: 1M steps of a SAC agent trained online to D4RL's medium return):
#                 hopper and walker2d 500k updates, halfcheetah 300k (the authors' config says 100k;
#                 longer so that scratch can plateau), 50k pretraining, evaluation every 5k, 3 seeds
#          edac-switch-v1 EDAC at the switch on the same data: N=10 --bf16, 20k pretraining + 20k,
#                 evaluation every 1k; pretrained seeds BENCH_PRETRAINED_SEEDS (default "2 3"), scratch
#                 seeds BENCH_SCRATCH_SEEDS (default "1", the floor), EDAC+BC seeds BENCH_REMEDY_SEEDS
#                 (default "1"); set to empty, a seed list runs none (BENCH_SCRATCH_SEEDS=
#                 BENCH_REMEDY_SEEDS= BENCH_PRETRAIN=50000 BENCH_TOTAL=70000: EDAC after the paper's
#                 50k pretraining alone, in its own BENCH_OUT)
#          appendix-e-v1 Appendix E: TD3+BC pretrained vs scratch on the runs' replay buffers (default
#                 local/<task>/medium-replay-v1), 300k updates, 50k pretraining, 1 seed
#          adroit Table 2's grid (4 scripts x pen/door/hammer/relocate human+cloned, paper protocol,
#                 300k updates, 200k pretraining, evaluation every 10k)
#          quick  one dataset, both families, small budget (about 30 minutes on 2 cores)
#          speed  updates/s of every script's pretraining and finetuning, fp32 and --bf16, against
#                 CORL-structured reference loops (tools/speed_reference.py), and the ratios (first
#                 dataset of BENCH_DATASETS, default halfcheetah-medium)
# Before a local grid starts it prints the grid, the run count and an estimate of its duration
# from a short speed probe of each script on each dataset (BENCH_PROBE=0 skips the probe; a dry
# run skips it unless BENCH_PROBE=1).
# Settings (environment variables):
#   BENCH_DATASETS  space-separated dataset ids/short names (default per profile; a locally built
#                   Minari dataset works too, e.g. "local/hopper/medium-v0" with MINARI_DATASETS_PATH)
#   BENCH_SEEDS     space-separated seeds (paper/adroit: "1 2 3", quick: "1")
#   BENCH_JOBS      runs at once here (default: the number of cores); with more than one, each run
#                   gets one torch thread (OMP_NUM_THREADS=1)
#   BENCH_OUT       output folder (default bench/PROFILE): runs/, logs/, summary.md, PNG plots
#   BENCH_SCRIPTS   space-separated scripts to run, a subset of the profile's (e.g. "td3bc_pretrain";
#                   figure2: "edac_bc_pretrain" selects its EDAC+BC runs)
#   BENCH_TOTAL     updates per run, pretraining included (default per profile/script)
#   BENCH_PRETRAIN  pretraining updates of the pretrained runs (default per profile/script), or auto
#                   (--pretrain-steps auto: each run pretrains until its validation losses converge;
#                   the summary reports the lengths chosen)
#   BENCH_FLAGS     extra flags for every run, last on its command line (e.g. "--no-compile")
#   BENCH_LAUNCHER  local (default) or slurm: write BENCH_OUT/slurm_array.sh, one array task per
#                   run, and submit it with sbatch (--dry-run prints it instead)
#   BENCH_SLURM_TIME  each task's time limit (default 24:00:00); a task that reaches it is requeued
#                   (SIGUSR1 two minutes before the limit, trapped: scontrol requeue) and resumes its run
#                   from the last checkpoint, so no limit is too short for a run
#   BENCH_SLURM_CPUS  --cpus-per-task (default 2; the run uses them as torch threads)
#   BENCH_SLURM_MAX   at most this many tasks running at once (--array=0-N%K; default: no cap)
#   BENCH_SLURM_ARGS extra sbatch arguments, e.g. "--partition gpu --gres gpu:1" (they win over the above)
# Each run logs to BENCH_OUT/logs/NAME.log. Re-running skips finished runs and resumes interrupted
# ones from their last checkpoint; a SLURM task does the same for its run. At the end of a local
# grid, tools/summarize.py writes the table and the plots.
set -euo pipefail
cd "$(dirname "$0")"
repo="$(pwd)"
export PYTHONUNBUFFERED=1  # run logs show each evaluation as it happens

profile=paper
profiles="paper|figure2|figure2-v1|edac-switch-v1|appendix-e-v1|adroit|quick|speed"
case "${1:-}" in
  ""|--dry-run) ;;
  summarize)
    shift
    [ $# -gt 0 ] || { echo "usage: bash benchmark.sh summarize BENCH_OUT [MORE_BENCH_OUT ...]" >&2; exit 2; }
    roots=()
    for out in "$@"; do
      [ -d "$out/runs" ] || { echo "summarize: no runs/ folder in '$out' (pass the BENCH_OUT of a grid)" >&2; exit 2; }
      roots+=("$out/runs")
    done
    exec python tools/summarize.py "${roots[@]}" --out "$1" --figure2 --allow-dips 1 --switch 2000
    ;;
  *) profile="$1"; shift ;;
esac
dry_run=0
task=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --task) task="${2:?--task needs a run index}"; shift ;;
    *) echo "unknown argument '$1'; usage: bash benchmark.sh [$profiles] [--dry-run]" >&2; exit 2 ;;
  esac
  shift
done
case "$profile" in
  paper)
    datasets="${BENCH_DATASETS:-hopper-medium halfcheetah-medium walker2d-medium}"
    seeds="${BENCH_SEEDS:-1 2 3}"
    scripts="td3bc_pretrain edac_pretrain"
    common="--eval-freq 5000"
    ;;
  figure2)
    datasets="${BENCH_DATASETS:-hopper-medium halfcheetah-medium walker2d-medium}"
    seeds="${BENCH_SEEDS:-1 2 3}"
    scripts="td3bc_pretrain edac_pretrain"
    common=""
    remedy=edac_bc_pretrain  # pretrained only, BENCH_REMEDY_SEEDS; summarized against EDAC's scratch runs
    remedy_seeds="${BENCH_REMEDY_SEEDS:-1 2}"
    ;;
  figure2-v1)
    datasets="${BENCH_DATASETS:-local/hopper/medium-v1 local/halfcheetah/medium-v1 local/walker2d/medium-v1}"
    seeds="${BENCH_SEEDS:-1 2 3}"
    scripts="td3bc_pretrain"
    common="--eval-freq 5000"
    ;;
  edac-switch-v1)
    datasets="${BENCH_DATASETS:-local/hopper/medium-v1 local/halfcheetah/medium-v1 local/walker2d/medium-v1}"
    pretrained_seeds="${BENCH_PRETRAINED_SEEDS-2 3}"
    scratch_seeds="${BENCH_SCRATCH_SEEDS-1}"
    seeds="$(echo $scratch_seeds $pretrained_seeds | tr ' ' '\n' | sort -un | tr '\n' ' ')"
    scripts="edac_pretrain"
    common=""
    remedy=edac_bc_pretrain
    remedy_seeds="${BENCH_REMEDY_SEEDS-1}"
    ;;
  appendix-e-v1)
    datasets="${BENCH_DATASETS:-local/hopper/medium-replay-v1 local/halfcheetah/medium-replay-v1 local/walker2d/medium-replay-v1}"
    seeds="${BENCH_SEEDS:-1}"
    scripts="td3bc_pretrain"
    common="--eval-freq 5000"
    ;;
  adroit)
    datasets="${BENCH_DATASETS:-pen-human door-human hammer-human relocate-human pen-cloned door-cloned hammer-cloned relocate-cloned}"
    seeds="${BENCH_SEEDS:-1 2 3}"
    scripts="td3bc_pretrain td3bc_cql_pretrain edac_pretrain edac_bc_pretrain"
    common="--eval-protocol paper --eval-freq 10000"
    ;;
  quick)
    datasets="${BENCH_DATASETS:-hopper-medium}"
    seeds="${BENCH_SEEDS:-1}"
    scripts="td3bc_pretrain edac_pretrain"
    common="--eval-freq 2500 --eval-episodes 5"
    ;;
  speed)
    datasets="${BENCH_DATASETS:-halfcheetah-medium}"  # 17 observations, 6 actions: the reference loops' sizes
    ;;
  *)
    echo "unknown profile '$profile'; usage: bash benchmark.sh [$profiles] [--dry-run], or bash benchmark.sh summarize BENCH_OUT" >&2
    exit 2
    ;;
esac
remedy="${remedy:-}"
pretrained_seeds="${pretrained_seeds-${seeds:-}}"
scratch_seeds="${scratch_seeds-${seeds:-}}"
if [ -n "${BENCH_SCRIPTS:-}" ]; then
  chosen="" chosen_remedy=""
  for script in ${BENCH_SCRIPTS//.py/}; do
    if grep -qw -- "$script" <<<"$scripts"; then
      chosen="$chosen $script"
    elif [ -n "$remedy" ] && [ "$script" = "$remedy" ]; then
      chosen_remedy="$remedy"
    else
      echo "BENCH_SCRIPTS: '$script' is not in the $profile profile (it runs: $scripts${remedy:+ $remedy})" >&2
      exit 2
    fi
  done
  scripts="${chosen# }" remedy="$chosen_remedy"
fi
for var in BENCH_TOTAL BENCH_PRETRAIN; do
  if [ -n "${!var:-}" ] && ! [[ "${!var}" =~ ^[0-9]+$ ]] && ! [ "$var:${!var}" = BENCH_PRETRAIN:auto ]; then
    echo "$var must be a whole number of updates$([ $var = BENCH_PRETRAIN ] && echo ' or auto') (got '${!var}')" >&2
    exit 2
  fi
done
launcher="${BENCH_LAUNCHER:-local}"
case "$launcher" in
  local|slurm) ;;
  *) echo "BENCH_LAUNCHER must be local or slurm (got '$launcher')" >&2; exit 2 ;;
esac
out="${BENCH_OUT:-bench/$profile}"
jobs="${BENCH_JOBS:-$(nproc)}"
threads=""
[ "$jobs" -gt 1 ] && threads="OMP_NUM_THREADS=1"

# per-script flags of a profile, its total updates and its pretraining length
# (empty: the script's task default; BENCH_TOTAL / BENCH_PRETRAIN override)
extra_flags() {  # script
  case "$profile:$1" in
    quick:edac_pretrain) echo "--num-critics 10" ;;
    figure2:td3bc_pretrain) echo "--eval-freq 5000" ;;
    figure2:edac_pretrain | figure2:edac_bc_pretrain) echo "--num-critics 10 --eval-freq 2000 --bf16" ;;
    edac-switch-v1:*) echo "--num-critics 10 --eval-freq 1000 --bf16" ;;
  esac
}
total_steps() {  # script [dataset]
  if [ -n "${BENCH_TOTAL:-}" ]; then echo "$BENCH_TOTAL"; return; fi
  case "$profile:$1" in
    paper:*) echo 1000000 ;;
    figure2:td3bc_pretrain) echo 300000 ;;
    figure2:edac_pretrain | figure2:edac_bc_pretrain) echo 60000 ;;
    figure2-v1:*) case "${2:-}" in *halfcheetah*) echo 300000 ;; *) echo 500000 ;; esac ;;
    edac-switch-v1:*) echo 40000 ;;
    appendix-e-v1:*) echo 300000 ;;
    adroit:*) echo 300000 ;;
    quick:td3bc_pretrain) echo 20000 ;;
    quick:edac_pretrain) echo 5000 ;;
  esac
}
pretrain_steps() {  # script
  if [ -n "${BENCH_PRETRAIN:-}" ]; then echo "$BENCH_PRETRAIN"; return; fi
  case "$profile:$1" in
    paper:*) echo 50000 ;;
    figure2:td3bc_pretrain) echo 50000 ;;
    figure2:edac_pretrain | figure2:edac_bc_pretrain) echo 20000 ;;
    figure2-v1:* | appendix-e-v1:*) echo 50000 ;;
    edac-switch-v1:*) echo 20000 ;;
    adroit:*) echo 200000 ;;
    quick:td3bc_pretrain) echo 5000 ;;
    quick:edac_pretrain) echo 2500 ;;
  esac
}
# The updates/s a script reaches on a dataset: the last log interval of a short finetuning run, with the
# threads that a run of the grid gets.
probe_speed() {  # script dataset; its output in $out/probe.log
  local n=1500
  case "$1" in edac*) n=30 ;; esac
  env $threads python "$1.py" --env-id "$2" $(extra_flags "$1") --pretrain-steps 0 --total-timesteps $n --eval-freq $n \
    --log-freq $((n / 3)) --eval-episodes 1 ${BENCH_FLAGS:-} --runs-dir "$out/probe" > "$out/probe.log" 2>&1
  grep -E "^\[finetune\] update $n/" "$out/probe.log" | sed -E 's/.*\| ([0-9.]+) updates\/s.*/\1/' || true
}

if [ "$profile" = speed ]; then
  dataset="${datasets%% *}"
  mkdir -p "$out"
  speed_runs=(
    "td3bc_pretrain finetune --pretrain-steps 0 --total-timesteps 3000"
    "td3bc_pretrain pretrain --pretrain-steps 3000 --total-timesteps 3000"
    "edac_pretrain finetune-N10 --pretrain-steps 0 --total-timesteps 60 --num-critics 10"
    "edac_pretrain critic-pretrain-N10 --pretrain-steps 60 --pretrain-mode critic --total-timesteps 60 --num-critics 10"
    "edac_pretrain finetune-N50 --pretrain-steps 0 --total-timesteps 30 --num-critics 50"
  )
  declare -A speed
  echo "| script | phase | fp32 updates/s | --bf16 updates/s |"
  echo "| --- | --- | --- | --- |"
  for spec in "${speed_runs[@]}"; do
    read -r script label flags <<<"$spec"
    total=$(sed -E 's/.*--total-timesteps ([0-9]+).*/\1/' <<<"$flags")
    row="| $script | $label |"
    for precision in fp32 bf16; do
      cmd="python $script.py --env-id $dataset $flags --eval-freq $total --log-freq $((total / 3)) --eval-episodes 1 --runs-dir $out/runs"
      [ "$precision" = bf16 ] && cmd="$cmd --bf16"
      if [ "$dry_run" = 1 ]; then echo "would run: $cmd"; continue; fi
      ups=$($cmd 2>&1 | grep -E "^\[(pretrain|finetune)\] update $total/" | sed -E 's/.*\| ([0-9.]+) updates\/s.*/\1/' || true)
      speed["$label $precision"]="${ups:-nan}"
      row="$row ${ups:-failed} |"
    done
    [ "$dry_run" = 1 ] || echo "$row"
  done
  refs=(
    "td3bc-finetune --algo td3bc --layernorm"
    "td3bc-pretrain --algo td3bc --layernorm --phase pretrain"
    "edac-N10-finetune --algo edac --num-critics 10"
    "edac-N10-pretrain --algo edac --num-critics 10 --phase pretrain"
    "edac-N50-finetune --algo edac --num-critics 50 --steps 5"
  )
  for spec in "${refs[@]}"; do
    read -r label flags <<<"$spec"
    cmd="python tools/speed_reference.py $flags"
    if [ "$dry_run" = 1 ]; then echo "would run: $cmd"; continue; fi
    line=$($cmd)
    echo "$line"
    speed["ref $label"]=$(sed -E 's/.*: ([0-9.]+) updates\/s/\1/' <<<"$line")
  done
  [ "$dry_run" = 1 ] && exit 0
  ratio() { python -c "import sys; a, b = map(float, sys.argv[1:]); print(f'{a / b:.2f}x' if b > 0 and a == a else 'n/a')" "$1" "$2"; }
  both() {  # label reference goal_fp32 goal_bf16
    echo "fp32 $(ratio "${speed[$1 fp32]}" "${speed[ref $2]}") (goal $3), bf16 $(ratio "${speed[$1 bf16]}" "${speed[ref $2]}") (goal $4)"
  }
  echo "ratios, same run (ours / CORL-structured; ours with LayerNorm, CORL's EDAC without):"
  echo "  TD3+BC finetuning:            $(both finetune td3bc-finetune 1.8x 2.5x)"
  echo "  TD3+BC pretraining:           $(both pretrain td3bc-pretrain 1.8x 2.5x)"
  echo "  EDAC N=10 finetuning:         $(both finetune-N10 edac-N10-finetune 1.5x 2.5x)"
  echo "  EDAC N=10 critic pretraining: $(both critic-pretrain-N10 edac-N10-pretrain 1.5x 2.5x)"
  echo "  EDAC N=50 finetuning:         $(both finetune-N50 edac-N50-finetune - -)"
  exit 0
fi

# The grid, in a fixed order: run i of a SLURM array is names[i] here too.
names=() run_scripts=() run_flags=() run_totals=()
add_run() {  # dataset script seed variant
  local steps total
  steps=$(pretrain_steps "$2")
  [ "$4" = scratch ] && steps=0
  total=$(total_steps "$2" "$1")
  names+=("${1//\//-}__${2}__${4}__${3}")
  run_scripts+=("$2")
  run_totals+=("$total")
  run_flags+=("--env-id $1 --seed $3 $common $(extra_flags "$2") ${total:+--total-timesteps $total} ${steps:+--pretrain-steps $steps} --save-model ${BENCH_FLAGS:-}")
}
for dataset in $datasets; do
  for script in $scripts; do
    for seed in $seeds; do
      for variant in pretrained scratch; do
        variant_seeds=$([ $variant = pretrained ] && echo "$pretrained_seeds" || echo "$scratch_seeds")
        if grep -qw -- "$seed" <<<"$variant_seeds"; then add_run "$dataset" "$script" "$seed" "$variant"; fi
      done
    done
  done
done
for dataset in ${remedy:+$datasets}; do  # figure2: the remedy where the paper's EDAC does not carry over
  for seed in $remedy_seeds; do
    add_run "$dataset" "$remedy" "$seed" pretrained
  done
done
count=${#names[@]}

# The command of run i: skip it if finished, resume it if it has a checkpoint, else start it.
run_command() {  # index
  local name="${names[$1]}" run_root="$out/runs/${names[$1]}" existing
  if compgen -G "$run_root/*/summary.csv" >/dev/null; then
    return 1
  fi
  existing=$(compgen -G "$run_root/*/checkpoint.pt" | head -n 1 || true)
  if [ -n "$existing" ]; then
    echo "python ${run_scripts[$1]}.py --resume $(dirname "$existing")"
  else
    echo "python ${run_scripts[$1]}.py ${run_flags[$1]} --runs-dir $run_root"
  fi
}

if [ -n "$task" ]; then  # one run of the grid, in the foreground (a SLURM array task)
  if ! [[ "$task" =~ ^[0-9]+$ ]] || [ "$task" -ge "$count" ]; then
    echo "--task $task: the $profile grid has runs 0..$((count - 1))" >&2
    exit 2
  fi
  mkdir -p "$out/runs" "$out/logs"
  if ! cmd=$(run_command "$task"); then echo "done already: ${names[$task]}"; exit 0; fi
  echo "start: ${names[$task]}: $cmd"
  $cmd > "$out/logs/${names[$task]}.log" 2>&1 || { echo "FAILED: ${names[$task]} (see $out/logs/${names[$task]}.log)"; exit 1; }
  echo "finished: ${names[$task]}"
  exit 0
fi

grid="${scripts:+scripts: $scripts; seeds: pretrained ${pretrained_seeds:-none}, scratch ${scratch_seeds:-none}}"
[ -n "$remedy" ] && grid="${grid:+$grid; }$remedy: seeds ${remedy_seeds:-none}, pretrained only"
echo "grid: profile $profile; datasets: $datasets; $grid"
echo "runs: $count ($launcher launcher; output in $out)"

if [ "$dry_run" = 0 ]; then  # every dataset here (or downloaded now) before any run starts
  python - $datasets <<'PY' || exit 1
import sys, utils
for name in sys.argv[1:]:
    try:
        utils.load_dataset(name)
    except utils.DatasetError as e:
        sys.exit(f"error: {e}")
PY
fi

if [ "$launcher" = slurm ]; then
  array="$out/slurm_array.sh"
  array_text=$(
    echo "#!/usr/bin/env bash"
    echo "#SBATCH --job-name=bench-$profile"
    echo "#SBATCH --array=0-$((count - 1))${BENCH_SLURM_MAX:+%$BENCH_SLURM_MAX}"
    echo "#SBATCH --output=$out/logs/slurm-%A_%a.out"
    echo "#SBATCH --time=${BENCH_SLURM_TIME:-24:00:00}"
    echo "#SBATCH --cpus-per-task=${BENCH_SLURM_CPUS:-2}"
    echo "#SBATCH --requeue"
    echo "#SBATCH --signal=B:USR1@120"
    echo "# One array task per run: task i runs run i of the grid (benchmark.sh --task i), which skips"
    echo "# a finished run and resumes an interrupted one. Two minutes before the time limit SLURM sends"
    echo "# USR1: the task requeues itself and, started again, resumes from the run's last checkpoint."
    echo "# When all are done: bash benchmark.sh summarize $out"
    echo "set -euo pipefail"
    echo "cd $(printf '%q' "$repo")"
    echo "export OMP_NUM_THREADS=\${SLURM_CPUS_PER_TASK:-${BENCH_SLURM_CPUS:-2}}"
    echo 'requeue() { echo "time limit near: requeue ${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"; scontrol requeue "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"; pkill -TERM -P "$child" 2>/dev/null || true; kill "$child" 2>/dev/null || true; wait "$child" || true; exit 0; }'
    echo "trap requeue USR1"
    for var in BENCH_DATASETS BENCH_SEEDS BENCH_SCRIPTS BENCH_TOTAL BENCH_PRETRAIN BENCH_FLAGS MINARI_DATASETS_PATH; do
      [ -n "${!var:-}" ] && echo "export $var=$(printf '%q' "${!var}")"
    done
    echo "export BENCH_OUT=$(printf '%q' "$out")"
    echo "bash benchmark.sh $profile --task \"\$SLURM_ARRAY_TASK_ID\" &"
    echo 'child=$!'
    echo 'wait "$child"'
  )
  submit="sbatch ${BENCH_SLURM_ARGS:-} $array"
  if [ "$dry_run" = 1 ]; then
    echo "$array_text"
    echo "would write $array and submit: $submit"
    exit 0
  fi
  mkdir -p "$out/logs"
  echo "$array_text" > "$array"
  echo "submitting: $submit"
  $submit
  echo "when the array is done: bash benchmark.sh summarize $out"
  exit 0
fi

if [ "${BENCH_PROBE:-$((1 - dry_run))}" = 1 ]; then
  echo "speed probe (a short finetuning run of each script on each dataset):"
  mkdir -p "$out"
  total_s=0
  for dataset in $datasets; do
    for script in $scripts $remedy; do
      ups=$(probe_speed "$script" "$dataset")
      if [ -z "$ups" ]; then
        echo "  $script on $dataset: probe failed: $(tail -n 1 "$out/probe.log")" >&2
        exit 1
      fi
      runs_here=$(( $(wc -w <<<"$pretrained_seeds") + $(wc -w <<<"$scratch_seeds") ))
      [ "$script" = "$remedy" ] && runs_here=$(wc -w <<<"$remedy_seeds")
      total=$(total_steps "$script" "$dataset")
      secs=$(python -c "print(round($runs_here * $total / $ups))")
      echo "  $script on $dataset: $ups updates/s -> $runs_here runs x $total updates = ${secs} s"
      total_s=$((total_s + secs))
    done
  done
  python -c "s = $total_s / min($jobs, $count); print(f'estimate: {s / 60:.0f} min ({s / 3600:.1f} h) with {min($jobs, $count)} runs at a time '
             f'(training only, at the probed finetuning speed; evaluation and contention add to it)')"
fi

mkdir -p "$out/runs" "$out/logs"
running=0
for i in "${!names[@]}"; do
  name="${names[$i]}"
  if ! cmd=$(run_command "$i"); then
    echo "done already: $name"
    continue
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
[ "$dry_run" = 1 ] && exit 0
wait
python tools/summarize.py "$out/runs" --out "$out" --figure2 --allow-dips 1 --switch 2000
