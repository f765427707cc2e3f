#!/usr/bin/env bash
# Reproduce the README leaderboards: deeprec-compare with the tuned experiment configs
# (conf/experiment/compare_<data>.yaml), then copy leaderboard.md/.csv/.png into
# bench_results/leaderboards/<data>/.
#   scripts/run_leaderboards.sh                      # all four: synthetic coursera movielens epm
#   scripts/run_leaderboards.sh coursera epm         # some of them
#   scripts/run_leaderboards.sh movielens -- trainer.accelerator=gpu   # extra overrides after --
#   SEEDS='[1,2,3]' TUNE=20 TUNE_TIMEOUT=600 scripts/run_leaderboards.sh   # over seeds, tuned on valid first
# SEEDS (default [1,2,3]: the leaderboard over seeds with intervals), TUNE (default 0: the defaults
# and the experiment's model_overrides) and TUNE_TIMEOUT (seconds per model, default null). A tuned run
# (TUNE > 0) writes to runs/leaderboard-<data>-tune<N>/ and bench_results/leaderboards/<data>-tune<N>/,
# beside the untuned leaderboard instead of over it.
# Each run is niced and bounded by LEADERBOARD_TIMEOUT seconds (default 3600).
set -euo pipefail

cd "$(dirname "$0")/.."
datasets=()
while [[ $# -gt 0 && "$1" != "--" ]]; do datasets+=("$1"); shift; done
[[ "${1:-}" == "--" ]] && shift
extra=("$@")
[[ ${#datasets[@]} -eq 0 ]] && datasets=(synthetic coursera movielens epm)
limit="${LEADERBOARD_TIMEOUT:-3600}"
seeds="${SEEDS:-[1,2,3]}"
tune="${TUNE:-0}"
tune_timeout="${TUNE_TIMEOUT:-null}"

suffix=""
[[ "$tune" != "0" ]] && suffix="-tune${tune}"

for data in "${datasets[@]}"; do
  name="${data}${suffix}"
  echo "== deeprec-compare +experiment=compare_${data} seeds=${seeds} tune=${tune} out_dir=runs/leaderboard-${name} ${extra[*]:-}"
  start=$(date +%s)
  nice -n 5 timeout "$limit" deeprec-compare "+experiment=compare_${data}" "seeds=${seeds}" "tune=${tune}" \
    "tune_timeout=${tune_timeout}" "out_dir=runs/leaderboard-${name}" ${extra[@]+"${extra[@]}"}
  echo "== ${name}: $(( $(date +%s) - start )) s"
  dest="bench_results/leaderboards/${name}"
  mkdir -p "$dest"
  cp "runs/leaderboard-${name}"/leaderboard.{md,csv,png} "$dest/"
done
