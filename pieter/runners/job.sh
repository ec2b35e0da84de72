#!/bin/sh
# One job, as every runner starts it, in its workspace (the cwd): clone the source if the job has one, then
# exec the scenario script with the job's parameters. $1 is the job's directory, written by the server:
#   source       the git URL or path to clone (absent: an empty workspace)
#   source.shown the same with any password replaced, for the log
#   params.sh    `export NAME='value'` lines: the parameters, given to the script only, never to the clone
#   script       the scenario, run by its #! line if it has one, else by /bin/sh
set -u
job=$1
if [ -e "$job/source" ]; then
    echo "pieter: cloning $(cat "$job/source.shown")"
    # safe.directory: a local source belongs to another user than the job's (git 2.36+ refuses it otherwise)
    if ! git -c safe.directory="*" -c advice.detachedHead=false clone --no-local --depth 1 -- "$(cat "$job/source")" . 2>&1; then
        echo "pieter: git clone failed: the job did not run"
        : >.pieter-clone-failed
        exit 1
    fi
fi
. "$job/params.sh"
case "$(head -c 2 "$job/script")" in
    '#!') exec "$job/script" ;;
    *) exec /bin/sh "$job/script" ;;
esac
