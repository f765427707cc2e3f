#!/usr/bin/env bash
# Reproduce the README leaderboards: deeprec-compare with the tuned experiment configs
# (conf/experiment/compare_<data>.yaml), then copy leaderboard.md/.csv/.png into
# bench_results/leaderboards/<data>/.
#   scripts/run_leaderboards.sh                      # all four: synthetic coursera movielens epm
#   scripts/run_leaderboards.sh coursera epm         # some of them
#   scripts/run_leaderboards.sh movielens -- trainer.accelerator=gpu   # extra overrides after --
# Each run is niced and bounded by LEADERBOARD_TIMEOUT seconds (default 3600).
set -euo pipefail

cd "$(dirname "$0")/.."
datasets=()
while [[ $# -gt 0 && "$1" != "--" ]]; do datasets+=("$1"); shift; done
[[ "${1:-}" == "--" ]] && shift
extra=("$@")
[[ ${#datasets[@]} -eq 0 ]] && datasets=(synthetic coursera movielens epm)
limit="${LEADERBOARD_TIMEOUT:-3600}"

for data in "${datasets[@]}"; do
  echo "== deeprec-compare +experiment=compare_${data} ${extra[*]:-}"
  start=$(date +%s)
  nice -n 5 timeout "$limit" deeprec-compare "+experiment=compare_${data}" "${extra[@]}"
  echo "== ${data}: $(( $(date +%s) - start )) s"
  dest="bench_results/leaderboards/${data}"
  mkdir -p "$dest"
  cp "runs/leaderboard-${data}"/leaderboard.{md,csv,png} "$dest/"
done
