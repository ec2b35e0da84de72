#!/bin/sh
# One job, as every runner starts it, in its workspace (the cwd): clone the source if the job has one, then
# run the scenario script with the job's parameters. The job's files are in $1 (local runner) or in the
# unit's credentials directory (systemd runner), written by the server:
#   source       the git URL or path to clone (absent: an empty workspace)
#   source.shown the same with any password replaced, for the log
#   params.sh    `export NAME='value'` lines: the parameters, given to the script only, never to the clone
#   script       the scenario, run by its #! line if it has one, else by /bin/sh
set -u
job=${1:-$CREDENTIALS_DIRECTORY}
if [ -e "$job/source" ]; then
    echo "pieter: cloning $(cat "$job/source.shown")"
    if ! GIT_CONFIG_GLOBAL="$(dirname "$0")/clone.gitconfig" git clone --no-local --depth 1 -- "$(cat "$job/source")" . 2>&1; then
        echo "pieter: git clone failed: the job did not run"
        : >.pieter-clone-failed
        exit 1
    fi
    # A password in the URL stays out of .git/config, so that `git remote -v` cannot print it into the log.
    git remote set-url origin "$(cat "$job/source.shown")"
fi
. "$job/params.sh"
# The script file is not executable (a credential is read-only): run its #! line as the kernel would.
read -r first <"$job/script" || true
case "$first" in
    '#!'*) exec ${first#??} "$job/script" ;;
    *) exec /bin/sh "$job/script" ;;
esac
