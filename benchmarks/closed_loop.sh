#!/usr/bin/env bash
# The closed-loop benchmark of issue 13: FIT with the closed loop (and without, its default) against the baselines with and
# without the same loop, on synthetic 60 and 120 requests and real PCH 60, evaluated every 20 requests
# under the honest protocol, with the int4 quantization attack on FIT; then the ablation of FIT's parts (F; I and T on
# row edits; the stop; the guard; the paper's units, T's layers, with and without the loop).
#
#   bash benchmarks/closed_loop.sh synth60|synth120|pch60|ablation [extra stream_bench.py options]
#   bash benchmarks/closed_loop.sh data DIR NAME [extra stream_bench.py options]   # any data directory, e.g. a
#       held-out set of another kind (benchmarks/austen_set.py); every forget document is a request (--limit N: fewer)
#
# Every stage is resumable (re-run the same line after an interruption: prepared models and finished
# methods are kept, a method cut mid-stream resumes from its journal).  Cost on 2 CPU cores with the
# default model: preparing the 120-request set trains theta_0 on 160 documents and the retain-only model
# on 40 (24 minutes in session 13); a closed-loop method spends about 20-40 s per request plus about 3 minutes
# per evaluation, so one 120-request method is about an hour: run it over several sessions.
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:?usage: closed_loop.sh synth60|synth120|pch60|ablation, or data DIR NAME}
shift || true
METHODS="fit,fit-paper,fit-paper-loop,ga-rows-loop,graddiff,graddiff-loop,npo,npo-loop,ga,ga-loop"  # fit: its defaults (closed loop, token-keyed edits, docs/fit.md); fit-paper: the paper's open-loop recipe on T's layers; ga-rows-loop: GA row edits, FIT's update without F
SET='{"update": {"template_max_df": 0.2}}'  # facts-only text for every method, as FIT's example config

prepare_synth() {  # $1 forget, $2 retain, $3 holdout, $4 suffix of the data and prepared directories
  if [ ! -f "fit_data/synth$4/forget.jsonl" ]; then
    fit-unlearn data synth --n-forget "$1" --n-retain "$2" --n-holdout "$3" --out "fit_data/synth$4"
  fi
  fit-unlearn prepare --data "fit_data/synth$4" --out "fit_runs/prepared$4"  # skips what is already trained
}

case "$what" in
  synth60)
    prepare_synth 60 20 20 ""
    python benchmarks/stream_bench.py --prepared fit_runs/prepared --name synth60-loop \
      --runs fit_runs/bench-synth60-loop --methods "$METHODS" --limit 60 --eval-every 20 --set "$SET" \
      --attacks quantize4 --attack-methods fit,fit-paper-loop "$@" ;;
  synth120)
    prepare_synth 120 40 40 "120"
    python benchmarks/stream_bench.py --prepared fit_runs/prepared120 --name synth120-loop \
      --runs fit_runs/bench-synth120-loop --methods "$METHODS" --limit 120 --eval-every 20 --set "$SET" \
      --attacks quantize4 --attack-methods fit,fit-paper-loop "$@" ;;
  pch60)
    : "${FIT_UNLEARN_PCH_DIR:=../shared/data/pch}"
    fit-unlearn prepare --data "$FIT_UNLEARN_PCH_DIR" --n-forget 60 --n-retain 20 --epochs 3 --out fit_runs/pch60
    python benchmarks/stream_bench.py --prepared fit_runs/pch60 --name pch60-loop --runs fit_runs/bench-pch60-loop \
      --methods "$METHODS" --limit 60 --eval-every 20 --set "$SET" --attacks quantize4 --attack-methods fit,fit-paper-loop "$@" ;;
  ablation)
    prepare_synth 60 20 20 ""
    python benchmarks/stream_bench.py --prepared fit_runs/prepared --name synth20-ablation \
      --runs fit_runs/bench-synth20-ablation --methods fit,fit-noF,fit-rowsI,fit-rowsT,fit-nostop,fit-noguard,fit-paper-loop,fit-paper \
      --limit 20 --eval-every 20 --set "$SET" "$@" ;;
  data)
    dir=${1:?usage: closed_loop.sh data DIR NAME [options]}
    name=${2:?usage: closed_loop.sh data DIR NAME [options]}
    shift 2
    fit-unlearn prepare --data "$dir" --out "fit_runs/prepared-$name"
    python benchmarks/stream_bench.py --prepared "fit_runs/prepared-$name" --name "$name-loop" \
      --runs "fit_runs/bench-$name-loop" --methods "$METHODS" --limit 100000 --eval-every 20 --set "$SET" \
      --attacks quantize4 --attack-methods fit,fit-paper-loop "$@" ;;
  *) echo "unknown stage '$what': choose synth60, synth120, pch60, ablation or data DIR NAME" >&2; exit 2 ;;
esac
