#!/usr/bin/env bash
# hal's GPU device check, for an offline machine whose python3 already holds torch (CUDA build).
#
#   scripts/device-check.sh            # all sections; OUT=dir for the files (default /tmp/hal-device-check)
#   HAL_CHECK_SECTIONS="devices oom" scripts/device-check.sh
#
# Installs hal into that python3 itself (pip --no-deps --no-build-isolation -e .; no venv: a venv
# of a venv would not see its torch), after installing from a carried .wheelhouse only the
# packages that python lacks.  Never touches a network (PIP_NO_INDEX=1).  Each section runs
# under its own timeout and a 7-minute overall deadline, writes $OUT/<n>.txt, and prints one
# line "PASS|FAIL <n> <section>: <summary>"; the setup log heads 1.txt.  Exit status: the number
# of failed sections (0..8), or 9 when hal could not be installed.  Sections: docs/hardware-results.md.
set -u -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
OUT="${OUT:-${TMPDIR:-/tmp}/hal-device-check}"
WHEELHOUSE="${HAL_CHECK_WHEELHOUSE:-$ROOT/.wheelhouse}"
DEADLINE=$(( $(date +%s) + ${HAL_CHECK_BUDGET_S:-420} ))
SECTIONS="${HAL_CHECK_SECTIONS-devices probe-precision memory oom bench nccl plan engine}"
export PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
mkdir -p "$OUT"
rm -f "$OUT"/[1-8].txt
# The setup log heads 1.txt: the device tool brings back at most 8 files.
SETUP_LOG="$OUT/1.txt"

# Seconds a step may take: its own limit, cut to what is left of the overall deadline.
limit() {
    local left=$(( DEADLINE - $(date +%s) - 5 ))
    (( left < $1 )) && echo "$(( left > 1 ? left : 1 ))" || echo "$1"
}

install_hal() {
    echo "python: $(command -v "$PY") $("$PY" --version 2>&1)"
    # Distribution names of what hal and this check import, by module; only the missing travel.
    local missing
    missing=$("$PY" - <<'EOF'
import importlib.util
need = {"pluggy": "pluggy", "psutil": "psutil", "rich": "rich", "pynvml": "nvidia-ml-py",
        "transformers": "transformers", "setuptools": "setuptools"}
print(" ".join(d for m, d in need.items() if importlib.util.find_spec(m) is None))
EOF
    ) || { echo "cannot run $PY"; return 1; }
    if [ -n "$missing" ]; then
        echo "missing from $PY: $missing"
        if [ -d "$WHEELHOUSE" ]; then
            timeout 120 "$PY" -m pip install --no-index --no-deps --find-links "$WHEELHOUSE" \
                $missing || echo "wheelhouse install failed: $?"
        else
            echo "no .wheelhouse carried (scripts/prepare-wheelhouse.sh makes one)"
        fi
    else
        echo "nothing missing: no wheels needed"
    fi
    if timeout 180 "$PY" -m pip install --no-deps --no-build-isolation -e "$ROOT"; then
        echo "installed: pip install --no-deps --no-build-isolation -e ."
    else
        # Setuptools too old for an editable install: stage hal as installed (backends/ as
        # hal.backends) with its entry points, on PYTHONPATH.
        echo "editable install failed ($?): staging hal on PYTHONPATH instead"
        STAGE="${TMPDIR:-/tmp}/hal-device-check-stage"
        "$PY" "$ROOT/scripts/stage_hal.py" "$ROOT" "$STAGE" || return 1
        export PYTHONPATH="$STAGE${PYTHONPATH:+:$PYTHONPATH}"
    fi
    (cd /tmp && timeout 120 "$PY" -c 'import hal, torch
print("hal", hal.__version__, "from", hal.__file__)
print("torch", torch.__version__, "cuda", torch.version.cuda)')
}

echo "== setup"
if ! install_hal > "$SETUP_LOG" 2>&1; then
    cat "$SETUP_LOG"
    echo "FAIL 0 setup: hal could not be installed into $PY (see above)"
    exit 9
fi
tail -n 3 "$SETUP_LOG"
echo "== sections"

declare -A LIMITS=([devices]=90 [probe-precision]=45 [memory]=45 [oom]=60 [bench]=150 \
                   [nccl]=60 [plan]=100 [engine]=100)
declare -A NUMBERS=([devices]=1 [probe-precision]=2 [memory]=3 [oom]=4 [bench]=5 [nccl]=6 \
                    [plan]=7 [engine]=8)
failed=0
summary=()
for section in $SECTIONS; do
    n="${NUMBERS[$section]:-}"
    if [ -z "$n" ]; then
        summary+=("FAIL ? $section: no such section")
        failed=$(( failed + 1 ))
        continue
    fi
    file="$OUT/$n.txt"
    secs=$(limit "${LIMITS[$section]}")
    (cd /tmp && timeout --kill-after=10 "$secs" "$PY" "$ROOT/scripts/device_check.py" "$section") \
        >> "$file" 2>&1
    rc=$?
    verdict=$(grep -a '^VERDICT: ' "$file" | tail -n 1 | cut -c10-)
    if [ "$rc" = 0 ] && [ "${verdict#PASS}" != "$verdict" ]; then
        line="PASS $n $section:${verdict#PASS}"
    else
        failed=$(( failed + 1 ))
        case "$rc" in
            124|137) why="timed out after ${secs} s" ;;
            *) why="${verdict#FAIL }" ;;
        esac
        line="FAIL $n $section: ${why:-exit $rc, no verdict (see $n.txt)}"
    fi
    echo "$line" >> "$file"
    echo "$line"
    summary+=("$line")
done
echo "== summary ($failed failed, $(( $(date +%s) - DEADLINE + ${HAL_CHECK_BUDGET_S:-420} )) s)"
printf '%s\n' "${summary[@]}"
exit "$failed"
