#!/usr/bin/env bash
# Submits a tessera training run to Slurm with the layout its config asks for. Reads [parallel]
# tp, pp, dp and [train] device from the INI file (tessera options after `--` override them, as
# they do for tessera), works out nodes and tasks per node so that the world size is
# tp x pp x dp, picks slurm/train.sbatch (cuda: one task per GPU) or slurm/train_cpu.sbatch
# (cpu), prints the sbatch command and runs it. docs/CLUSTER.md has the whole story.
#
#   slurm/submit.sh --config configs/gpt2_124m.ini --gpus-per-node 8 -- --data.path data/owt
#   slurm/submit.sh --config my.ini --nodes 4 --gpus-per-node 4 --time=2-00:00:00 --dry-run
#   slurm/submit.sh --config my.ini --gpus-per-node 8 --check -- --data.path data/owt
#   slurm/submit.sh --config configs/demo.ini -- --parallel.tp 2 --parallel.pp 2 --parallel.dp 1
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
prog=slurm/submit.sh

usage() {
  cat <<EOF
usage: $prog --config FILE [options] [sbatch options] [-- tessera train options]

  --config FILE          tessera INI file (required); exported to the job as CONFIG
  --nodes N              nodes (default: as few as the layout needs, or 1 when dp is 0)
  --gpus-per-node G      cuda: GPUs, and so ranks, per node (default 8)
  --tasks-per-node T     cpu: ranks per node (default: the whole world on one node, or
                         tp x pp when dp is 0)
  --run-dir DIR          the job's RUN_DIR (default: the config's [run] dir, else RUN_DIR of
                         this environment, else runs/JOB_NAME)
  --tessera BIN          the tessera binary (default: build/bin/tessera of this checkout),
                         passed to the job as an absolute path
  --launcher L           srun (default) or mpirun, inside the allocation
  --template FILE        another batch script
  --dry-run              print the sbatch command, do not run it
  --check                first run `tessera train --check` here for the job's ranks, with the
                         job's config, run directory and options (it reads the corpora and the
                         checkpoint the job would resume: for large ones, a while); nothing is
                         submitted when it refuses the run

Other options that start with -- (in --option=value form) go to sbatch as they are, e.g.
--time=12:00:00 --partition=gpu --account=proj --cpus-per-task=16 --parsable; and the job's
name as -J NAME, -JNAME or --job-name=NAME (default: tessera-CONFIG).
With dp = 0 (the default) the world size comes from the allocation: nodes x ranks per node,
and must be a multiple of tp x pp.
EOF
}

die() {
  echo "$prog: $*" >&2
  exit 2
}

# The value of KEY in [SECTION] of an INI file (tessera's syntax: `key = value`, `#` comments
# at the start of a line or after a space, or `section.key = value` outside any section); empty
# when absent. The last one wins. (`;` is no comment to tessera, which refuses `tp = 2 ; two`.)
ini_get() {
  awk -v want_section="$2" -v want_key="$3" '
    { sub(/(^|[ \t])#.*/, "") }
    /^[ \t]*\[/ { section = $0; gsub(/[][ \t]/, "", section); next }
    /=/ {
      key = substr($0, 1, index($0, "=") - 1); value = substr($0, index($0, "=") + 1)
      gsub(/^[ \t]+|[ \t\r]+$/, "", key); gsub(/^[ \t]+|[ \t\r]+$/, "", value)
      if ((section == want_section && key == want_key) ||
          (section == "" && key == want_section "." want_key)) found = value
    }
    END { print found }' "$1"
}

config="" nodes="" per_node="" per_node_flag="" run_dir="" tessera="" launcher="" template="" dry_run=0
check=0
sbatch_opts=() tessera_args=() job_name=""
# Stops, naming what option $1 needs ($3), unless its value $2 is there.
value_of() { [ -n "${2:-}" ] || die "$1 needs $3"; }
# Why an environment that sbatch does not pass on whole is refused.
no_env="the job would not get CONFIG, TESSERA and RUN_DIR from this environment"
while [ $# -gt 0 ]; do
  case "$1" in
    --config) value_of "$1" "${2:-}" "a file"; config=$2; shift 2 ;;
    --nodes) value_of "$1" "${2:-}" "a number"; nodes=$2; shift 2 ;;
    --nodes=*) nodes=${1#*=}; value_of --nodes "$nodes" "a number"; shift ;;
    --gpus-per-node | --tasks-per-node) value_of "$1" "${2:-}" "a number"; per_node=$2; per_node_flag=$1; shift 2 ;;
    --gpus-per-node=* | --tasks-per-node=*) per_node=${1#*=} per_node_flag=${1%%=*}; value_of "$per_node_flag" "$per_node" "a number"; shift ;;
    # sbatch's own layout options would override the ones computed here, unchecked.
    --ntasks=* | --ntasks-per-node=* | --ntasks-per-gpu=* | --gpus=* | --gpus-per-task=* | \
      --gpus-per-socket=* | --cpus-per-gpu=* | --tres-per-task=* | --gres=* | -N* | -n*)
      die "$1: give the layout as --nodes and --gpus-per-node (or --tasks-per-node); $prog computes sbatch's from them and the config" ;;
    --run-dir) value_of "$1" "${2:-}" "a directory"; run_dir=$2; shift 2 ;;
    --tessera) value_of "$1" "${2:-}" "a path"; tessera=$2; shift 2 ;;
    --launcher) value_of "$1" "${2:-}" "srun or mpirun"; launcher=$2; shift 2 ;;
    --template) value_of "$1" "${2:-}" "a file"; template=$2; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    --check) check=1; shift ;;
    -h | --help) usage; exit 0 ;;
    --) shift; tessera_args=("$@"); break ;;
    -J) value_of "$1" "${2:-}" "a job name"; job_name=$2; sbatch_opts+=("-J" "$2"); shift 2 ;;
    --job-name=*) job_name=${1#*=}; sbatch_opts+=("$1"); shift ;;
    -J*) job_name=${1#-J}; sbatch_opts+=("$1"); shift ;;
    # The job takes CONFIG, TESSERA and RUN_DIR from the environment sbatch passes on.
    --export=ALL*) sbatch_opts+=("$1"); shift ;;
    --export=*) die "$1: $no_env; leave --export out (or give --export=ALL,...)" ;;
    --*=* | --parsable | --exclusive | --requeue | --no-requeue | --hold) sbatch_opts+=("$1"); shift ;;
    *) die "unknown argument '$1': sbatch options go as --option=value, tessera's after -- ($prog --help)" ;;
  esac
done

[ -n "$config" ] || die "--config FILE is required ($prog --help)"
case "${SBATCH_EXPORT:-ALL}" in
  ALL*) ;;
  *) die "SBATCH_EXPORT=$SBATCH_EXPORT: $no_env; unset it (or make it ALL,...)" ;;
esac
[ -f "$config" ] || die "--config $config: no such file"
config=$(realpath "$config")
# The binary, checked now and passed on absolute: the job may start in another directory
# (--chdir), and a binary that is not there would fail only after the job's wait in the queue.
tessera=${tessera:-$here/../build/bin/tessera}
[ -f "$tessera" ] && [ -x "$tessera" ] ||
  die "--tessera $tessera: no such executable file (build it with scripts/build.sh, or give --tessera BIN)"
tessera=$(realpath "$tessera")

tp=$(ini_get "$config" parallel tp) pp=$(ini_get "$config" parallel pp)
dp=$(ini_get "$config" parallel dp) device=$(ini_get "$config" train device)
# tessera's command line wins over its config file: so does ours.
for ((i = 0; i < ${#tessera_args[@]}; ++i)); do
  arg=${tessera_args[i]} next=${tessera_args[i + 1]:-}
  case "$arg" in
    --parallel.tp | --parallel.pp | --parallel.dp | --train.device) value=$next ;;
    --parallel.tp=* | --parallel.pp=* | --parallel.dp=* | --train.device=*) value=${arg#*=}; arg=${arg%%=*} ;;
    # The template gives tessera both, and resumes a requeued run from its RUN_DIR.
    --run.dir | --run.dir=*) die "$arg after --: give the run directory as $prog's --run-dir DIR" ;;
    --config | --config=*) die "$arg after --: give the config as $prog's --config FILE" ;;
    # The job would only check its run, and exit 0 having trained nothing.
    --check | --check=*) die "$arg after --: the job would check its run and train nothing; $prog --check checks it before submitting" ;;
    *) continue ;;
  esac
  case "$arg" in
    --parallel.tp) tp=$value ;; --parallel.pp) pp=$value ;; --parallel.dp) dp=$value ;;
    --train.device) device=$value ;;
  esac
done
tp=${tp:-1} pp=${pp:-1} dp=${dp:-0} device=${device:-cpu}

is_count() { [[ "$1" =~ ^[0-9]+$ ]]; }
for v in "tp:$tp" "pp:$pp" "dp:$dp"; do
  is_count "${v#*:}" || die "--parallel.${v%%:*}: expected a whole number, found '${v#*:}'"
done
[ "$tp" -ge 1 ] && [ "$pp" -ge 1 ] || die "--parallel.tp and --parallel.pp: expected 1 or more, found tp $tp, pp $pp"
[ -z "$nodes" ] || { is_count "$nodes" && [ "$nodes" -ge 1 ]; } || die "--nodes: expected 1 or more, found '$nodes'"
[ -z "$per_node" ] || { is_count "$per_node" && [ "$per_node" -ge 1 ]; } ||
  die "$per_node_flag: expected 1 or more, found '$per_node'"
case "$device" in
  cuda) default_template=$here/train.sbatch unit="GPUs"
        [ "${per_node_flag:---gpus-per-node}" = --gpus-per-node ] || die "--tasks-per-node: for --train.device cuda give --gpus-per-node (one rank per GPU)" ;;
  cpu) default_template=$here/train_cpu.sbatch unit="tasks"
       [ "${per_node_flag:---tasks-per-node}" = --tasks-per-node ] || die "--gpus-per-node: the config trains on the cpu (--train.device cpu); give --tasks-per-node" ;;
  *) die "--train.device: expected cpu or cuda, found '$device'" ;;
esac
template=${template:-$default_template}
[ -f "$template" ] || die "--template $template: no such file"

mp=$((tp * pp))
if [ "$dp" -gt 0 ]; then
  world=$((mp * dp))
  if [ -n "$nodes" ]; then
    [ $((world % nodes)) -eq 0 ] ||
      die "tp $tp x pp $pp x dp $dp = $world ranks do not split evenly over $nodes nodes"
    if [ -n "$per_node" ] && [ "$per_node" -ne $((world / nodes)) ]; then
      die "tp $tp x pp $pp x dp $dp = $world ranks on $nodes nodes is $((world / nodes)) per node, not $per_node_flag $per_node"
    fi
    per_node=$((world / nodes))
  else
    [ "$device" = cuda ] && per_node=${per_node:-8}
    if [ -z "$per_node" ] || [ "$world" -le "$per_node" ]; then
      nodes=1 per_node=$world
    else
      [ $((world % per_node)) -eq 0 ] ||
        die "tp $tp x pp $pp x dp $dp = $world ranks do not fill nodes of $per_node $unit: make the world a multiple of $per_node, or change $per_node_flag"
      nodes=$((world / per_node))
    fi
  fi
else
  nodes=${nodes:-1}
  [ "$device" = cuda ] && per_node=${per_node:-8}
  per_node=${per_node:-$mp}
  world=$((nodes * per_node))
  [ $((world % mp)) -eq 0 ] ||
    die "$nodes node(s) x $per_node $unit = $world ranks is not a multiple of tp $tp x pp $pp = $mp (dp is inferred as ranks / (tp x pp))"
  dp=$((world / mp))
fi
# TP ranks are consecutive (rank = (pp * DP + dp) * TP + tp) and talk at every layer: keep each
# TP group on one node.
if [ "$nodes" -gt 1 ] && [ $((per_node % tp)) -ne 0 ]; then
  die "tp $tp does not divide the $per_node ranks per node: a tensor-parallel group would span nodes"
fi

cmd=(sbatch --nodes="$nodes" --ntasks-per-node="$per_node")
[ "$device" = cuda ] && cmd+=(--gpus-per-node="$per_node")
[ -n "$job_name" ] || { job_name="tessera-$(basename "$config" .ini)" && cmd+=(--job-name="$job_name"); }
cmd+=("${sbatch_opts[@]}" "$template" "${tessera_args[@]}")
envs=(CONFIG="$config" TESSERA="$tessera")
[ -z "$launcher" ] || envs+=(LAUNCHER="$launcher")

# The run directory: --run-dir, else the config's (the template's --run.dir would otherwise
# replace it), else RUN_DIR of this environment (which sbatch passes on), else the template's
# default for the job's name; always given to the job, so that the one printed and checked is the
# one it uses.
run_dir_from=", --run-dir"
[ -n "$run_dir" ] || { run_dir=$(ini_get "$config" run dir) && run_dir_from=", the config's [run] dir"; }
[ -n "$run_dir" ] || { run_dir=${RUN_DIR:-} && run_dir_from=", RUN_DIR of this environment"; }
[ -n "$run_dir" ] || { run_dir=runs/$job_name && run_dir_from=", the template's default for the job's name"; }
envs+=(RUN_DIR="$run_dir")
# Where the job starts (sbatch's --chdir, else here) is where its relative paths lead: the check
# runs there.
check_dir=.
for o in "${sbatch_opts[@]}"; do case "$o" in --chdir=*) check_dir=${o#*=} ;; esac; done
[ "$check" -eq 0 ] || [ -d "$check_dir" ] || die "--chdir=$check_dir: no such directory (the job would start there)"
ranks=ranks; [ "$world" -eq 1 ] && ranks=rank
echo "layout: tp $tp x pp $pp x dp $dp = $world $ranks on $nodes node(s) x $per_node $unit ($device)"
echo "run dir: $run_dir$run_dir_from"
line=$(printf '%q ' env "${envs[@]}" "${cmd[@]}")
echo "${line% }"
if [ "$check" -eq 1 ]; then
  rc=0
  (cd "$check_dir" && "$tessera" train --config "$config" --run.dir "$run_dir" \
    --check "$world" "${tessera_args[@]}") || rc=$?
  [ "$rc" -eq 0 ] || { echo "$prog: tessera train --check refused the run (above): nothing submitted" >&2; exit "$rc"; }
fi
[ "$dry_run" -eq 1 ] && exit 0
exec env "${envs[@]}" "${cmd[@]}"
