#!/usr/bin/env bash
# The Slurm templates against a real Slurm on this machine. Starts munged, slurmctld and slurmd
# in a temporary directory (one node declaring 4 CPUs, whatever the machine has), submits
# slurm/train_cpu.sbatch through slurm/submit.sh with a tiny TP 2 x PP 2 model on 4 tasks, and
# once training is under way sends USR1 to the batch script as Slurm does before a time limit.
# It then holds the templates to their contract: tessera saved a checkpoint and said
# "preempted:", the job requeued itself (restart 1), the requeued run said "resumed from", the job
# completed, and every logged loss, the final one included, is bitwise that of the same run
# uninterrupted (a second job, launched with mpirun inside the allocation). Also checks that
# submit.sh refuses impossible layouts with one message, and that a job ends unrequeued when
# tessera's options name a run directory or when it stopped before it saved anything.
#
#   tests/slurm_test.sh [TESSERA_BINARY]      (default build/bin/tessera; root only)
#
# Exit 77 (skipped) when not root or a Slurm/munge/MPI program is missing; about 21 s on 2
# cores. TESSERA_KEEP_TEST_DIR=1 keeps the temporary directory for a look afterwards.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
binary=${1:-$repo/build/bin/tessera}
t0=$(date +%s)
elapsed() { echo $(($(date +%s) - t0)); }
say() { echo "[slurm_test $(elapsed)s] $*"; }

if [ "$(id -u)" -ne 0 ]; then
  echo "SKIP: needs root (starts munged as user munge and slurmd as root)"
  exit 77
fi
for program in munged mungekey slurmctld slurmd sbatch srun scontrol squeue scancel sinfo mpirun setpriv; do
  if ! command -v "$program" >/dev/null; then
    echo "SKIP: $program is not installed (scripts/setup.sh installs slurmctld slurmd slurm-client munge)"
    exit 77
  fi
done
[ -x "$binary" ] || { echo "FAIL: no tessera binary at $binary"; exit 1; }

tmp=$(mktemp -d /tmp/tessera_slurm_test.XXXXXX)
chmod 755 "$tmp"  # munged, running as user munge, must reach its directory inside
pids=()           # daemons started here, stopped by pid on exit
jobs_submitted=()
export SLURM_CONF=$tmp/slurm/slurm.conf

show_logs() {
  for f in "$tmp"/job_*.log "$tmp"/slurm/log/slurmctld.log "$tmp"/slurm/log/slurmd.log \
           "$tmp"/munge/munged.log; do
    [ -f "$f" ] || continue
    echo "----- last lines of $f"
    tail -n 40 "$f" | grep -v '^step ' || true
  done
}

fail() {
  echo "FAIL: $*"
  show_logs
  exit 1
}

cleanup() {
  local rc=$?
  trap - EXIT
  if [ ${#jobs_submitted[@]} -gt 0 ] && [ -n "$(squeue -h 2>/dev/null)" ]; then
    say "cancelling jobs ${jobs_submitted[*]}"
    scancel "${jobs_submitted[@]}" 2>/dev/null || true
    for _ in $(seq 30); do [ -z "$(squeue -h 2>/dev/null)" ] && break; sleep 0.5; done
  fi
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  if [ "${TESSERA_KEEP_TEST_DIR:-0}" = 1 ]; then
    echo "kept $tmp"
  else
    rm -rf "$tmp"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_for WHAT SECONDS COMMAND...: runs COMMAND every half second until it succeeds.
wait_for() {
  local what=$1 limit=$2 start
  shift 2
  start=$(date +%s)
  say "waiting for $what (at most ${limit} s)"
  until "$@"; do
    [ $(($(date +%s) - start)) -lt "$limit" ] || fail "no $what after ${limit} s"
    sleep 0.5
  done
  say "  $what after $(($(date +%s) - start)) s"
}

# --- submit.sh: impossible layouts get one message and a non-zero exit, possible ones a command.
cat >"$tmp/gpu.ini" <<'EOF'
[train]
device = cuda
[parallel]
tp = 8   # a node's worth
pp = 2
dp = 2
EOF
expect_refusal() {
  local out rc=0
  out=$("$repo/slurm/submit.sh" --config "$tmp/gpu.ini" --tessera "$binary" --dry-run "$@" 2>&1) ||
    rc=$?
  [ "$rc" -ne 0 ] && [ "$(printf '%s\n' "$out" | wc -l)" -eq 1 ] ||
    fail "submit.sh $*: expected one error line and a non-zero exit, got exit $rc: $out"
  say "submit.sh $* -> $out"
}
expect_refusal --nodes 3                       # 32 ranks over 3 nodes
expect_refusal --gpus-per-node 4               # TP 8 would span nodes
expect_refusal -- --parallel.dp 0              # 1 node x 8 GPUs is no multiple of TP x PP = 16
expect_refusal --nodes                         # an option without its value
expect_refusal --nodes=3                       # the = form is checked the same way
expect_refusal --ntasks-per-node=4             # sbatch's layout would override the checked one
expect_refusal -- --run.dir "$tmp/elsewhere"   # the template gives tessera its RUN_DIR
expect_refusal --tessera "$tmp/no_such_binary" # the job would fail once it left the queue
expect_refusal -- --check                      # the job would check its run and train nothing
expect_refusal --export=NONE                   # the job would not get CONFIG, TESSERA, RUN_DIR
# No directory for the job, or its check, to start in.
out=$(expect_refusal --check --chdir="$tmp/nowhere") && echo "$out"
[[ "$out" == *"--chdir=$tmp/nowhere: no such directory"* ]] ||
  fail "submit.sh --check --chdir=$tmp/nowhere: expected the directory named, got: $out"
# The binary goes to the job as an absolute path: the job may start in another directory.
out=$(cd "$(dirname "$binary")" &&
  "$repo/slurm/submit.sh" --config "$tmp/gpu.ini" --tessera "./$(basename "$binary")" --dry-run) ||
  fail "submit.sh: $out"
[[ "$out" == *"TESSERA=$(realpath "$binary") "* ]] ||
  fail "submit.sh --tessera ./tessera: expected TESSERA=$(realpath "$binary"), got: $out"
out=$("$repo/slurm/submit.sh" --config "$tmp/gpu.ini" --tessera "$binary" --dry-run) ||
  fail "submit.sh: $out"
[[ "$out" == *"sbatch --nodes=4 --ntasks-per-node=8 --gpus-per-node=8 "*"/slurm/train.sbatch"* ]] ||
  fail "submit.sh for TP 8 x PP 2 x DP 2 on 8-GPU nodes: expected 4 nodes x 8, got: $out"
out=$("$repo/slurm/submit.sh" --config "$tmp/gpu.ini" --tessera "$binary" --dry-run -J my_run) ||
  fail "submit.sh: $out"
[[ "$out" == *" -J my_run "* ]] || fail "submit.sh -J my_run: expected it passed to sbatch, got: $out"
[[ "$out" == *"run dir: runs/my_run, "* ]] || fail "submit.sh -J my_run: expected run dir runs/my_run, got: $out"
# A config's [run] dir goes to the job (the template's --run.dir would replace it), and a `;`
# is no comment, as it is none to tessera.
{ cat "$tmp/gpu.ini"; printf '[run]\ndir = %s  # kept\n' "$tmp/from_config"; } >"$tmp/dir.ini"
out=$("$repo/slurm/submit.sh" --config "$tmp/dir.ini" --tessera "$binary" --dry-run) ||
  fail "submit.sh: $out"
[[ "$out" == *"RUN_DIR=$tmp/from_config "* ]] ||
  fail "submit.sh with [run] dir: expected RUN_DIR=$tmp/from_config, got: $out"
# Else RUN_DIR of the environment, which sbatch would pass on: given to the job, and printed.
out=$(RUN_DIR=$tmp/from_env "$repo/slurm/submit.sh" --config "$tmp/gpu.ini" --tessera "$binary" --dry-run) ||
  fail "submit.sh: $out"
[[ "$out" == *"run dir: $tmp/from_env, RUN_DIR of this environment"* && "$out" == *"RUN_DIR=$tmp/from_env "* ]] ||
  fail "submit.sh with RUN_DIR in the environment: expected it named and given to the job, got: $out"
sed 's/^tp = 8.*/tp = 8 ; eight/' "$tmp/gpu.ini" >"$tmp/semicolon.ini"
out=$("$repo/slurm/submit.sh" --config "$tmp/semicolon.ini" --tessera "$binary" --dry-run 2>&1) &&
  fail "submit.sh with tp = 8 ; eight: expected a refusal, got: $out"
[[ "$out" == *"--parallel.tp: expected a whole number, found '8 ; eight'"* ]] ||
  fail "submit.sh with tp = 8 ; eight: expected the value named, got: $out"

# --- A private copy of the binary (a rebuild must not swap it mid-test), a corpus, a config.
mkdir -p "$tmp/bin" "$tmp/data"
cp "$binary" "$tmp/bin/tessera"
text=/usr/share/games/fortunes/fortunes  # Debian's fortunes-min; else the project's own docs
[ -f "$text" ] || text=$repo/docs
"$tmp/bin/tessera" tokenize encode --input "$text" --output "$tmp/data/corpus" >/dev/null ||
  fail "tessera tokenize encode --input $text"
# The preempted job waits before step 20 until USR1 reaches it (--debug.wait_for_stop), however
# long its way through slurmctld and slurmd: with a fixed length instead, 4000 steps once ended
# before a loaded machine delivered the signal, 17 s after scancel.
steps=200
cat >"$tmp/tiny.ini" <<EOF
# A tiny byte-level model, about 5 ms a step as 4 ranks on 2 cores.
[model]
vocab_size = 260
d_model = 64
layers = 2
heads = 2
d_ff = 256
seq_len = 64
[train]
steps = $steps
global_batch = 8
micro_batch = 2
log_interval = 10
eval_interval = 0
[optim]
lr = 3e-3
warmup = 10
[parallel]
tp = 2
pp = 2
EOF

# --- submit.sh --check: tessera checks the job's run first, where the job will start (--chdir,
# whose relative paths it follows), writing nothing; a refusal submits nothing.
out=$(cd / && "$repo/slurm/submit.sh" --config "$tmp/tiny.ini" --run-dir run_checked \
  --tessera "$tmp/bin/tessera" --chdir="$tmp" --dry-run --check -- --data.path data/corpus 2>&1) ||
  fail "submit.sh --check: $out"
[[ "$out" == *"check: a run of 4 ranks"* && "$out" == *"layout: tp 2 x pp 2 x dp 1 = 4 ranks"* &&
  "$out" == *"check: passed in "* ]] || fail "submit.sh --check: expected tessera's check of 4 ranks, got: $out"
[ ! -e "$tmp/run_checked" ] || fail "submit.sh --check: the check made the run directory"
rc=0
out=$("$repo/slurm/submit.sh" --config "$tmp/tiny.ini" --tessera "$tmp/bin/tessera" --check \
  -- --data.path "$tmp/data/missing" 2>&1) || rc=$?
[ "$rc" -eq 2 ] && [[ "$out" == *"--data.path: corpus $tmp/data/missing"* &&
  "$out" == *"refused the run (above): nothing submitted"* ]] ||
  fail "submit.sh --check with a missing corpus: expected exit 2 and tessera's message, got exit $rc: $out"
say "submit.sh --check: passed a good run, refused a missing corpus"

# --- munged as user munge, with its own key, socket and pid file.
mkdir -p "$tmp/munge"
chown munge:munge "$tmp/munge"
setpriv --reuid=munge --regid=munge --init-groups mungekey --create --keyfile="$tmp/munge/munge.key"
chmod 400 "$tmp/munge/munge.key"
setpriv --reuid=munge --regid=munge --init-groups munged --foreground \
  --socket="$tmp/munge/munge.socket" --key-file="$tmp/munge/munge.key" \
  --pid-file="$tmp/munge/munged.pid" --log-file="$tmp/munge/munged.log" \
  --seed-file="$tmp/munge/munged.seed" >"$tmp/munge/munged.out" 2>&1 &
pids+=($!)
wait_for "munged's socket" 20 test -S "$tmp/munge/munge.socket"

# --- slurmctld and slurmd, on ports nobody listens on.
free_port() {
  local port
  while :; do
    port=$((20000 + RANDOM % 30000))
    # A connection that fails means nobody listens there.
    [ "$port" != "${1:-}" ] && ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && { echo "$port"; return; }
  done
}
ctld_port=$(free_port)
slurmd_port=$(free_port "$ctld_port")
node=$(hostname -s)
mkdir -p "$tmp/slurm/state" "$tmp/slurm/spool" "$tmp/slurm/log"
cat >"$SLURM_CONF" <<EOF
ClusterName=tessera-test
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$tmp/munge/munge.socket
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
# Trust the node's declared CPUs (4 tasks on however many cores there are).
SlurmdParameters=config_overrides
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
StateSaveLocation=$tmp/slurm/state
SlurmdSpoolDir=$tmp/slurm/spool
SlurmctldPidFile=$tmp/slurm/slurmctld.pid
SlurmdPidFile=$tmp/slurm/slurmd.pid
SlurmctldLogFile=$tmp/slurm/log/slurmctld.log
SlurmdLogFile=$tmp/slurm/log/slurmd.log
NodeName=$node NodeAddr=127.0.0.1 CPUs=4 State=UNKNOWN
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
slurmctld -D -f "$SLURM_CONF" >"$tmp/slurm/log/slurmctld.out" 2>&1 &
pids+=($!)
slurmd -D -f "$SLURM_CONF" >"$tmp/slurm/log/slurmd.out" 2>&1 &
pids+=($!)
node_idle() { [ "$(sinfo -h -n "$node" -o %T 2>/dev/null)" = idle ]; }
wait_for "node $node idle in Slurm" 60 node_idle

job_field() { scontrol -o show job "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p" | head -n 1; }
# Ended, by the job's own state: an empty answer of squeue is also what a failed RPC gives
# (slurmctld busy), which once passed for a finished job still RUNNING.
job_gone() {
  case "$(job_field "$1" JobState)" in
    COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY | BOOT_FAIL | DEADLINE) return 0 ;;
    *) return 1 ;;
  esac
}

# Every job runs with 4 ranks of one thread on what may be 2 cores: waiting ranks yield.
export OMPI_MCA_mpi_yield_when_idle=1 OMP_WAIT_POLICY=passive
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1  # for the mpirun job

# --- The job under test: srun --mpi=pmix, preempted once by USR1, requeued, resumed.
log=$tmp/job_preempted.log
say "submitting slurm/train_cpu.sbatch through slurm/submit.sh"
out=$("$repo/slurm/submit.sh" --config "$tmp/tiny.ini" --run-dir "$tmp/run_preempted" \
  --tessera "$tmp/bin/tessera" --cpus-per-task=1 --output="$log" --chdir="$tmp" \
  -- --data.path "$tmp/data/corpus" --debug.wait_for_stop 20 --checkpoint.resume none) ||
  fail "submit.sh: $out"
echo "$out"
job=$(sed -n 's/^Submitted batch job \([0-9]*\).*/\1/p' <<<"$out")
[ -n "$job" ] || fail "no job id in sbatch's answer: $out"
jobs_submitted+=("$job")

# A signal sent before the batch script has set its trap would be lost: wait until training has
# begun (its first log line, step 10; the trap is set before the ranks start), then signal; the
# run stops at the step the signal reaches, by step 20, where it waits for it.
training_logged() { awk '/^step / { split($2, s, "/"); if (s[1] + 0 >= 10) found = 1 } END { exit !found }' "$log" 2>/dev/null; }
wait_for "training under way in job $job (step 10 logged)" 120 training_logged
say "scancel --batch --signal=USR1 $job (what --signal=B:USR1@N does before the time limit)"
scancel --batch --signal=USR1 "$job"

requeued() { [ "$(job_field "$job" JobState)" = PENDING ] && [ "$(job_field "$job" Restarts)" = 1 ]; }
wait_for "job $job back in the queue (PENDING, Restarts=1)" 60 requeued
grep -q '^preempted:' "$log" || fail "job $job was requeued, but tessera never said 'preempted:'"
# Slurm holds a requeued job about 120 s (Reason=BeginTime). Once the old run is gone from the
# node, start it now: its step daemons have exited and cleaned up (the PMIx socket in the spool
# directory has the same step id), the node is idle again, and a few seconds have passed, since
# slurmd refuses ("Job N already killed, do not launch batch job") a job id it killed a moment
# ago, which a loaded machine otherwise meets.
old_run_gone() {
  local f
  for f in "$tmp/slurm/spool/"*[._]"$job".*; do [ -e "$f" ] && return 1; done
  ! pgrep -f "slurmstepd: \[$job\." >/dev/null && node_idle
}
wait_for "the preempted run to be gone from the node" 60 old_run_gone
sleep 5
scontrol update JobId="$job" StartTime=now
wait_for "job $job to finish" 180 job_gone "$job"

# --- The reference: the same run uninterrupted, through mpirun inside the allocation.
ref_log=$tmp/job_reference.log
say "submitting the uninterrupted reference (LAUNCHER=mpirun)"
out=$("$repo/slurm/submit.sh" --config "$tmp/tiny.ini" --run-dir "$tmp/run_reference" \
  --tessera "$tmp/bin/tessera" --launcher mpirun --cpus-per-task=1 --output="$ref_log" \
  --chdir="$tmp" -- --data.path "$tmp/data/corpus") || fail "submit.sh: $out"
ref_job=$(sed -n 's/^Submitted batch job \([0-9]*\).*/\1/p' <<<"$out")
[ -n "$ref_job" ] || fail "no job id in sbatch's answer: $out"
jobs_submitted+=("$ref_job")
wait_for "reference job $ref_job to finish" 180 job_gone "$ref_job"

# --- Jobs that must end at once, unrequeued: tessera's run directory among its options (which
# the template gives it itself), a binary that is not there, and a run stopped before it saved
# anything (what USR1 does when --time is shorter than --signal's lead), which a requeue would
# stop again.
refused_log=$tmp/job_refused.log
out=$(CONFIG="$tmp/tiny.ini" TESSERA="$tmp/bin/tessera" sbatch --output="$refused_log" \
  --chdir="$tmp" --ntasks-per-node=4 --cpus-per-task=1 "$repo/slurm/train_cpu.sbatch" \
  --run.dir "$tmp/x") ||
  fail "sbatch: $out"
refused_job=$(sed -n 's/^Submitted batch job \([0-9]*\).*/\1/p' <<<"$out")
jobs_submitted+=("$refused_job")
missing_log=$tmp/job_missing.log
out=$(CONFIG="$tmp/tiny.ini" TESSERA="bin/not_built" sbatch --output="$missing_log" \
  --chdir="$tmp" --ntasks-per-node=4 --cpus-per-task=1 "$repo/slurm/train_cpu.sbatch") ||
  fail "sbatch: $out"
missing_job=$(sed -n 's/^Submitted batch job \([0-9]*\).*/\1/p' <<<"$out")
jobs_submitted+=("$missing_job")
printf '%s\n' '#!/bin/sh' \
  'echo "preempted: stopped before the ranks agreed to start; nothing to save"' 'exit 3' \
  >"$tmp/bin/stops_unsaved"
chmod +x "$tmp/bin/stops_unsaved"
unsaved_log=$tmp/job_unsaved.log
out=$("$repo/slurm/submit.sh" --config "$tmp/tiny.ini" --run-dir "$tmp/run_unsaved" \
  --tessera "$tmp/bin/stops_unsaved" --cpus-per-task=1 --output="$unsaved_log" --chdir="$tmp" \
  -- --data.path "$tmp/data/corpus") || fail "submit.sh: $out"
unsaved_job=$(sed -n 's/^Submitted batch job \([0-9]*\).*/\1/p' <<<"$out")
jobs_submitted+=("$unsaved_job")
wait_for "job $refused_job to finish" 60 job_gone "$refused_job"
wait_for "job $unsaved_job to finish" 60 job_gone "$unsaved_job"
wait_for "job $missing_job to finish" 60 job_gone "$missing_job"
for check in "$refused_job 2:0 $refused_log --run.dir among tessera's options" \
  "$missing_job 2:0 $missing_log TESSERA=bin/not_built: no such executable file" \
  "$unsaved_job 3:0 $unsaved_log preempted before it saved a checkpoint; not requeued"; do
  read -r id code file message <<<"$check"
  [ "$(job_field "$id" JobState)" = FAILED ] && [ "$(job_field "$id" ExitCode)" = "$code" ] &&
    [ "$(job_field "$id" Restarts)" = 0 ] ||
    fail "job $id: expected FAILED with ExitCode $code, not requeued; found" \
      "$(job_field "$id" JobState), ExitCode $(job_field "$id" ExitCode), Restarts $(job_field "$id" Restarts)"
  grep -qF -- "$message" "$file" || fail "$file: expected '$message'"
  say "job $id: exit $code, not requeued: $message"
done

# --- What each job left behind.
say "checking"
state=$(job_field "$job" JobState) restarts=$(job_field "$job" Restarts) exit_code=$(job_field "$job" ExitCode)
[ "$state" = COMPLETED ] && [ "$exit_code" = 0:0 ] ||
  fail "job $job: expected COMPLETED with ExitCode 0:0, found $state, ExitCode $exit_code"
[ "$restarts" = 1 ] || fail "job $job: expected Restarts=1, found $restarts"
[ "$(grep -c '^preempted:' "$log")" -eq 1 ] || fail "$log: expected one 'preempted:' line"
preempted_line=$(grep '^preempted:' "$log")
checkpoint=$(sed -n 's/.*with checkpoint \([^;]*\);.*/\1/p' <<<"$preempted_line")
[ -n "$checkpoint" ] && [ -d "$checkpoint" ] ||
  fail "the 'preempted:' line names no checkpoint directory that exists: $preempted_line"
[[ "$checkpoint" == "$tmp/run_preempted/checkpoints/step_"* ]] ||
  fail "checkpoint $checkpoint is not under the job's run dir $tmp/run_preempted/checkpoints"
grep -q "^=== .* job $job (restart 1)" "$log" ||
  fail "$log: no line from the requeued run (SLURM_RESTART_COUNT=1)"
grep -q "^resumed from $checkpoint" "$log" || fail "$log: the requeued run did not say 'resumed from $checkpoint'"
grep -q "^=== .* tessera exited with code 0" "$log" || fail "$log: the requeued run did not end with code 0"
ref_state=$(job_field "$ref_job" JobState)
[ "$ref_state" = COMPLETED ] || fail "reference job $ref_job: expected COMPLETED, found $ref_state"
grep -q '^preempted:\|^resumed from' "$ref_log" && fail "the reference job was stopped or resumed"

# "step loss" of every metrics record, as written.
losses() { sed -n 's/.*"step": *\([0-9]*\),.*"loss": *\([^,}]*\).*/\1 \2/p' "$1"; }
losses "$tmp/run_preempted/metrics.jsonl" >"$tmp/losses_preempted"
losses "$tmp/run_reference/metrics.jsonl" >"$tmp/losses_reference"
last=$(tail -n 1 "$tmp/losses_preempted") last_ref=$(tail -n 1 "$tmp/losses_reference")
[ "${last%% *}" = "$steps" ] && [ "${last_ref%% *}" = "$steps" ] ||
  fail "metrics.jsonl: expected step $steps last, found '$last' (preempted) and '$last_ref' (reference)"
say "final loss at step $steps: preempted and resumed ${last#* }, uninterrupted ${last_ref#* }"
[ "$last" = "$last_ref" ] || fail "final losses differ: '$last' vs '$last_ref'"
# Every record of the preempted job (before and after the stop) that the reference has too is
# the reference's, bitwise; and the reference has none the preempted job lacks. (The resumed run
# also records its first step, which the reference does not log.)
differing=$(awk 'NR == FNR { ref[$1] = $2; next } ($1 in ref) && ref[$1] != $2' \
  "$tmp/losses_reference" "$tmp/losses_preempted")
[ -z "$differing" ] || fail "losses that differ from the uninterrupted run (step loss): $differing"
missing=$(awk 'NR == FNR { seen[$1]; next } !($1 in seen) { print $1 }' \
  "$tmp/losses_preempted" "$tmp/losses_reference")
[ -z "$missing" ] || fail "steps the uninterrupted run recorded and the preempted one did not: $missing"
[ "$(wc -l <"$tmp/losses_preempted")" -ge "$(wc -l <"$tmp/losses_reference")" ] ||
  fail "the preempted job logged fewer steps than the reference"

say "PASS: ${preempted_line%% with checkpoint*}; requeued, resumed, final loss bitwise equal ($(elapsed) s)"
