#!/usr/bin/env bash
# The benchmark report's runs (docs/results/report.md): every method on the synthetic benchmark
# (CFG, default cfg/synthetic.yml: VOC-shaped scenes; the committed report used the dense profile,
# CFG=cfg/synthetic_dense.yml) for 15p1, 19p1 and 10p10, plus LD with a frozen pretrained MobileNetV2, on
# one GPU, several runs at a time. Resumable: re-run the same command to continue where a run
# stopped (finished runs are skipped, interrupted tasks continue from their last epoch).
#
#     tools/synthetic_report.sh                 # everything, 2 runs at a time, into runs/report/
#     PROTOCOL=paper SEEDS="1234 1235 1236" PARALLEL=4 tools/synthetic_report.sh   # issue 23's report
#     EXTRA="--set KEY=VALUE ..." tools/synthetic_report.sh               # more overrides for every run
#     SCENARIOS=10p10 METHODS="naive replay" tools/synthetic_report.sh     # only these (and their base)
#     SCENARIOS="15p1 19p1" METHODS="$ABLATION" tools/synthetic_report.sh  # the background-term ablation
#     DRY_RUN=1 PROTOCOL=paper SEEDS="1234 1235 1236" tools/synthetic_report.sh   # what is left to run
#
# METHODS names: joint (15p1 only), naive, replay, replay_balanced, latent_replay, lwf, sid, ld, ld_pseudo
# (pseudo-labels), ld_mbv2 (15p1 only: the frozen pretrained MobileNetV2), erd (fine-tuning with ERD),
# replay_ocdm and replay_lp (replay with an OCDM buffer; with label propagation), box (fine-tuning with
# box replay), lwf_ocdm, ld_ocdm_lp and ld_box (the presets: LwF with an OCDM buffer; LD with an OCDM
# buffer and label propagation; LD with box replay), and METHOD_nobg for naive, lwf, sid and ld with
# --drop-background. Default: all but the _nobg ablation.
#
# PROTOCOL: short (default; what the committed one-seed tables used): the base 40 epochs, every task 25,
# a 100-step warm-up; paper: 100 epochs for the base and every task and the paper's 500-step warm-up
# (capped at a task's length by the runner). BASE_EPOCHS, EPOCHS and WARMUP_STEPS override either.
#
# Every method of a scenario starts from the same base model (task 0 trained once, naive, as in
# the paper, where all methods share the 15-class base), given by --base-model; joint training is
# the upper bound. Batch 64 and the paper's optimizer; the short protocol's warm-up is 100 steps
# because its one-class tasks have only 25 to 100 steps (VOC-shaped profile).
set -uo pipefail
cd "$(dirname "$0")/.."

OUT_DIR=${OUT_DIR:-runs/report}
# SEEDS="1234 1235 1236": every run (bases included) once per seed, into OUT_DIR/seedN/, one seed
# after the other; python tools/seed_report.py OUT_DIR --out DIR then tables mean ± std of what exists.
if [ -n "${SEEDS:-}" ]; then
    for seed in $SEEDS; do
        SEEDS="" SEED=$seed OUT_DIR="$OUT_DIR/seed$seed" bash "$0" || exit
    done
    exit 0
fi
SEED=${SEED:-1234}
CFG=${CFG:-cfg/synthetic.yml}
case ${PROTOCOL:=short} in
    short) BASE_EPOCHS=${BASE_EPOCHS:-40} EPOCHS=${EPOCHS:-25} WARMUP_STEPS=${WARMUP_STEPS:-100} ;;
    paper) BASE_EPOCHS=${BASE_EPOCHS:-100} EPOCHS=${EPOCHS:-100} WARMUP_STEPS=${WARMUP_STEPS:-500} ;;
    *) echo "error: PROTOCOL must be short or paper, got '$PROTOCOL'" >&2; exit 2 ;;
esac
# Runs at a time. Without MPS the GPU time-slices between processes: 8 concurrent runs at batch 64
# gave less total throughput than one run at batch 256 does (docs/results/report.md).
PARALLEL=${PARALLEL:-2}
PSEUDO_LABEL_SCORE=${PSEUDO_LABEL_SCORE:-0.5}
SCENARIOS=${SCENARIOS:-"15p1 19p1 10p10 15p5"}  # a subset runs only those (15p1 brings joint and MobileNetV2)
METHODS=${METHODS:-"joint ld ld_pseudo sid lwf replay replay_balanced latent_replay naive ld_mbv2 erd replay_ocdm \
replay_lp box lwf_ocdm ld_ocdm_lp ld_box"}
# The ablation of issue 20: does the background term on unlabelled old objects erase old classes?
# shellcheck disable=SC2034  # for the caller, as METHODS="$ABLATION"
ABLATION="naive naive_nobg lwf lwf_nobg sid sid_nobg ld ld_nobg ld_pseudo"
KNOWN_METHODS="joint naive replay replay_balanced latent_replay lwf sid ld ld_pseudo ld_mbv2 erd replay_ocdm replay_lp \
box lwf_ocdm ld_ocdm_lp ld_box naive_nobg lwf_nobg sid_nobg ld_nobg"
for m in $METHODS; do
    [[ " $KNOWN_METHODS " == *" $m "* ]] || { echo "error: METHODS: unknown method '$m' (known: $KNOWN_METHODS)" >&2; exit 2; }
done
BUFFER_SIZE=${BUFFER_SIZE:-250}
LABEL_PROPAGATION_SCORE=${LABEL_PROPAGATION_SCORE:-0.5}
BOX_REPLAY=${BOX_REPLAY:-1000}  # crops in the box-replay bank (48x48: 6.9 MB, against 76.8 MB for 250 images)
GPU="--device cuda:0 --no-progress-bar --seed $SEED --set device.gpu_augment=true --set device.precision=bf16 \
--set device.channels_last=true --set schedule.warmup.steps=$WARMUP_STEPS ${EXTRA:-}"
CLASSES=(disc ring square frame triangle diamond cross star hexagon octagon pentagon crescent arrow bar
         lshape tshape checker target bowtie drop)

epochs() { echo "--set schedule.total_epochs=$1 --set schedule.lr_schedule.T_max=$1"; }
first_classes() { local IFS=,; echo "[[${CLASSES[*]:0:$1}]]"; }  # a one-task scenario: task 0 only
base_of() { echo "$OUT_DIR/$1/base/task_0/model.pth"; }
# One base per number of base classes, shared by every scenario that starts from them (15p1 and
# 15p5, as in the paper), in the folder of the paper's first scenario with that many.
base_scenario() { case $1 in 15) echo 15p1 ;; 19) echo 19p1 ;; 10) echo 10p10 ;; *) echo "base$1" ;; esac; }

jobs_file=$(mktemp)
trap 'rm -f "$jobs_file"' EXIT
[ -n "${DRY_RUN:-}" ] || mkdir -p "$OUT_DIR/logs"

# One job per line: NAME RUN_DIR COMMAND...; a run whose results.json says finished is skipped.
# DRY_RUN=1: list the runs still to do (NAME RUN_DIR COMMAND) and run nothing.
run_jobs() {
    if [ -n "${DRY_RUN:-}" ]; then
        while read -r name run_dir command; do
            grep -qs '"finished": true' "$run_dir/results.json" || echo "$name $run_dir $command"
        done < "$jobs_file"
        return
    fi
    xargs -P "$PARALLEL" -L 1 bash -c '
        name=$0; run_dir=$1; shift
        if grep -qs "\"finished\": true" "$run_dir/results.json"; then exit 0; fi
        echo "$(date +%T) start $name"
        "$@" --out "$run_dir" > "'"$OUT_DIR"'/logs/$name.log" 2>&1 \
            && echo "$(date +%T) done $name" || echo "$(date +%T) FAILED $name (see logs/$name.log)"
    ' < "$jobs_file"
}

# Stage 1: the base models (task 0, one per number of base classes), joint training, LD's MobileNetV2 base.
: > "$jobs_file"
for n in $(for s in $SCENARIOS; do echo "${s%%p*}"; done | awk '!seen[$0]++'); do
    b=$(base_scenario "$n")
    echo "base_$b $OUT_DIR/$b/base python naive.py --task $(first_classes "$n") --cfg $CFG $GPU $(epochs "$BASE_EPOCHS")" >> "$jobs_file"
done
wants() { [[ " $METHODS " == *" $1 "* ]]; }
[[ " $SCENARIOS " == *" 15p1 "* ]] && wants joint && echo "joint $OUT_DIR/joint/naive python naive.py --task joint --cfg $CFG $GPU $(epochs "$BASE_EPOCHS")" >> "$jobs_file"
[[ " $SCENARIOS " == *" 15p1 "* ]] && wants ld_mbv2 && echo "base_15p1_mbv2 $OUT_DIR/15p1_mbv2/base python latentDistillation.py --task $(first_classes 15) --cfg cfg/synthetic_mbv2.yml $GPU $(epochs "$BASE_EPOCHS")" >> "$jobs_file"
run_jobs

# Stage 2: every method of every scenario from its base; the longest scenarios first.
# job METHOD RUN_DIR_SUFFIX COMMAND...: queued for scenario $s when METHODS names it.
job() { wants "$1" && echo "${s}_$1 $OUT_DIR/${s}${2}" "${@:3}" >> "$jobs_file"; }
: > "$jobs_file"
for s in $SCENARIOS; do
    from="--base-model $(base_of "$(base_scenario "${s%%p*}")")"
    common="--task $s --cfg $CFG $GPU $(epochs "$EPOCHS") $from"
    job ld /ld python latentDistillation.py $common
    job ld_pseudo /ld_pseudo_labels python latentDistillation.py $common --pseudo-labels $PSEUDO_LABEL_SCORE
    job sid /sid python SID.py $common
    job lwf /lwf python lwf.py $common
    job replay /replay python replay.py $common --buffer-size "$BUFFER_SIZE"
    job latent_replay /latent_replay python replay.py --latent $common --buffer-size "$BUFFER_SIZE"
    job naive /naive python naive.py $common
    job replay_balanced /replay_balanced python replay.py $common --buffer-size "$BUFFER_SIZE" --buffer-policy balanced
    job naive_nobg /naive_drop_background python naive.py $common --drop-background
    job lwf_nobg /lwf_drop_background python lwf.py $common --drop-background
    job sid_nobg /sid_drop_background python SID.py $common --drop-background
    job ld_nobg /ld_drop_background python latentDistillation.py $common --drop-background
    job erd /erd python naive.py $common --erd
    job replay_ocdm /replay_ocdm python replay.py $common --buffer-size "$BUFFER_SIZE" --buffer-policy ocdm
    job replay_lp /replay_label_propagation python replay.py $common --buffer-size "$BUFFER_SIZE" \
        --label-propagation "$LABEL_PROPAGATION_SCORE"
    job box /box_replay python naive.py $common --box-replay "$BOX_REPLAY"
    job lwf_ocdm /lwf_ocdm python lwf.py $common --buffer-size "$BUFFER_SIZE" --buffer-policy ocdm
    job ld_ocdm_lp /ld_ocdm_label_propagation python latentDistillation.py $common --buffer-size "$BUFFER_SIZE" \
        --buffer-policy ocdm --label-propagation "$LABEL_PROPAGATION_SCORE"
    job ld_box /ld_box_replay python latentDistillation.py $common --box-replay "$BOX_REPLAY"
    if [ $s = 15p1 ]; then
        job ld_mbv2 _mbv2/ld python latentDistillation.py --task 15p1 --cfg cfg/synthetic_mbv2.yml $GPU \
            $(epochs "$EPOCHS") --base-model $(base_of 15p1_mbv2)
    fi
done
run_jobs
