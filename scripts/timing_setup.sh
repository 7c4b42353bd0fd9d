# Sourced by the timing scripts (latency_best.sh, lowerings_report.sh) from the repository root: the interpreter
# ($PYTHON, default python3), the threads to time with ($THREADS, default torch's: all cores) as $ALL, the rounds
# ($ROUNDS, default 9; QUICK=1: 2, a smoke run), and the load average now, since timings taken under load say little.
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PYTHON="${PYTHON:-python3}"
ALL="${THREADS:-$("$PYTHON" -c "import torch; print(torch.get_num_threads())")}"
ROUNDS="${ROUNDS:-9}"
if [ "${QUICK:-0}" = "1" ]; then ROUNDS=2; fi
echo "load average now: $(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo "?") (timings mean little on a busy machine)" >&2
