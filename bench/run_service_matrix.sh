#!/usr/bin/env bash
# The service figures of #17 in one run: every server configuration below, each under 50 and 200
# closed-loop clients for 30 s, on the first 40 test_revised documents that fit the model, one
# after another on this machine (run it on an otherwise idle machine).
#
#   bench/run_service_matrix.sh MODEL_TAG [DURATION_S] [CLIENTS] [DOCS] [BASELINE_REV]
#   bench/run_service_matrix.sh dore-docred:latest             # 30 s, clients 50,200, 40 documents, 53de7be
#   bench/run_service_matrix.sh dore-docred:latest 5 8,16 10   # a short check that it works
#
# The baseline revision cannot load a model with a pair term (the main job's since 0698398's preset):
# serve every configuration a copy without it, made by bench/baseline_model.py and packaged with
# `dore package --artifacts DIR`, so all of them still run one model file.
#
# Configurations (all one worker; torch threads 1 unless named otherwise, so they compare):
#   baseline-on / baseline-off: the service and decoder of BASELINE_REV (the revision of
#     bench/results/service_baseline.md), exported from git, adaptive batching on / off;
#   continuous: this checkout's default, continuous row batching;
#   adaptive / unbatched: this checkout with DORE_BATCHING=on / off (finished rows leave the batch);
#   continuous-int8: continuous with int8 dynamic quantization;
#   continuous-machine: continuous with torch threads = the machine's CPUs (DORE_TORCH_THREADS).
# Writes bench/results/service_matrix.{json,md}; the ratios the issue targets are appended to the .md.
set -euo pipefail
MODEL=${1:?usage: $0 MODEL_TAG [DURATION_S] [CLIENTS] [DOCS] [BASELINE_REV]}
DURATION=${2:-30}
CLIENTS=${3:-50,200}
DOCS=${4:-40}
BASELINE_REV=${5:-53de7be}
REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$REPO/.venv/bin/python}
NAME=${NAME:-service_matrix}
cd "$REPO"
eval "$("$PY" -m dore.env)"  # the project's BentoML store and offline settings, for every server

BASE_SRC=$(mktemp -d /tmp/dore-baseline-XXXXXX)
trap 'rm -rf "$BASE_SRC"' EXIT
git archive "$BASELINE_REV" service.py dore | tar -x -C "$BASE_SRC"
echo "baseline $BASELINE_REV served from $BASE_SRC: imports $(cd "$BASE_SRC" && "$PY" -c 'import dore; print(dore.__file__)')"
CPUS=$(nproc)

"$PY" bench/bench_service.py --model "$MODEL" --clients "$CLIENTS" --duration "$DURATION" --docs "$DOCS" \
    --warmup "$DOCS" --torch-threads 1 --name "$NAME" \
    --config "baseline-on:DORE_BATCHING=on@$BASE_SRC" \
    --config "baseline-off:DORE_BATCHING=off@$BASE_SRC" \
    --config "continuous:DORE_BATCHING=continuous" \
    --config "adaptive:DORE_BATCHING=on" \
    --config "unbatched:DORE_BATCHING=off" \
    --config "continuous-int8:DORE_BATCHING=continuous,DORE_QUANTIZE=int8" \
    --config "continuous-machine:DORE_BATCHING=continuous,DORE_TORCH_THREADS=$CPUS"

"$PY" - "$REPO/bench/results/$NAME.json" "$REPO/bench/results/$NAME.md" <<'EOF'
import json, sys
runs = json.load(open(sys.argv[1]))["runs"]
rate = {(r["config"], r["clients"]): r["requests_per_s"] for r in runs}
lines = ["", "| clients | target | ratio |", "|---|---|---|"]
for clients in sorted({r["clients"] for r in runs}):
    def ratio(a, b):
        return f"{rate[(a, clients)] / rate[(b, clients)]:.2f}" if rate.get((b, clients)) else "-"
    lines += [f"| {clients} | 200s/s continuous / baseline-on (>= 2) | {ratio('continuous', 'baseline-on')} |",
              f"| {clients} | 200s/s continuous-int8 / baseline-on | {ratio('continuous-int8', 'baseline-on')} |",
              f"| {clients} | 200s/s continuous-machine / baseline-on | {ratio('continuous-machine', 'baseline-on')} |",
              f"| {clients} | batched / unbatched, same threads: continuous / unbatched (>= 2) | {ratio('continuous', 'unbatched')} |",
              f"| {clients} | adaptive / unbatched | {ratio('adaptive', 'unbatched')} |"]
for r in runs:
    rss = r["rss_mb"]
    if r["clients"] == max(x["clients"] for x in runs) and rss["after_load"] and rss["after_warmup"]:
        lines.append(f"| {r['clients']} | RSS after load - after warm-up, {r['config']} (<= 200 MB) | "
                     f"{rss['after_load'] - rss['after_warmup']:+.0f} MB |")
open(sys.argv[2], "a").write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
