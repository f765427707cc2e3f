#!/usr/bin/env bash
# The ratings paper's experiment (SPEC 1.11) on every timestamped clickstream deeprec knows:
# deeprec's synthetic log and the EPM Deeds clickstream (../shared/data/epm-deeds-clickstream).
# Outputs: runs/ratings-paper-<data>/ (table.md/.csv, tests.csv, resamples.csv, durations.csv,
# figure3_precision_vs_duration.png, figure4_users_vs_duration.png, summary.json).
# Extra arguments are Hydra overrides passed to every run, e.g. protocol.n_resamples=20.
set -euo pipefail
cd "$(dirname "$0")/.."
for experiment in ratings_paper_synthetic ratings_paper_epm; do
    echo "== $experiment"
    /usr/bin/env time -f "%e s wall, %M KB peak" \
        timeout 1800 python -m deeprec.cli.ratings_paper "+experiment=$experiment" "$@"
done
