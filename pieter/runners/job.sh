#!/bin/sh
# One job, in two steps, each started by the runner in the job's workspace (the cwd):
#   job.sh clone [DIR]   fetch the source (only run when the job has one)
#   job.sh run [DIR]     run the scenario script with the job's parameters
# The runner starts them as two processes (the systemd runner as the unit's ExecStartPre= and ExecStart=), so it
# knows which one failed: a script cannot make its own failure read as a failed clone. The job's files are in DIR
# (local runner) or in the unit's credentials directory (systemd runner), written by the server
# (pieter/runners/inputs.py):
#   environment  `export NAME='value'` lines: what every job starts with (PIETER_JOB_ID, HOME, ...); a file, not
#                the unit's Environment=, which any user could read in /run/systemd/transient
#   source       the git URL or path to clone, when it holds no secret (no source at all: an empty workspace)
#   handoff      instead of `source`, when the clone needs a secret (a password or token in the URL, a deploy
#                key): the socket it receives URL and key from; it answers once, before the script runs, so the
#                script can read neither (pieter/handoff.py)
#   source.shown the source with any password replaced, for the log
#   commit       a commit to check out instead of the default branch's head (a webhook's push)
#   known_hosts  the SSH host keys the clone accepts (host key checking stays on)
#   params.sh    `export NAME='value'` lines: the parameters, given to the script only, never to the fetch
#   script       the scenario, run by its #! line if it has one, else by /bin/sh
set -u
step=$1
job=${2:-$CREDENTIALS_DIRECTORY}
. "$job/environment"

fetch() {
    if [ -e "$job/commit" ]; then  # fetched by URL, not through a remote: a password never reaches .git/config
        commit=$(cat "$job/commit")
        git init -q . && git fetch -q --depth 1 "$source" "$commit" \
            && git remote add origin "$(cat "$job/source.shown")" \
            && git -c advice.detachedHead=false checkout -q FETCH_HEAD && echo "pieter: checked out $commit"
    else
        git clone --no-local --depth 1 -- "$source" .
    fi
}

if [ "$step" = clone ]; then
    echo "pieter: cloning $(cat "$job/source.shown")"
    here=$(dirname "$0")
    # clone.gitconfig: a local source belongs to another user than the job's (safe.directory)
    GIT_CONFIG_GLOBAL="$here/clone.gitconfig"
    export GIT_CONFIG_GLOBAL GIT_TERMINAL_PROMPT=0  # a clone that needs a password it was not given fails, not waits
    known_hosts=/dev/null
    [ -e "$job/known_hosts" ] && known_hosts=$job/known_hosts
    export GIT_SSH_COMMAND="ssh -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=$known_hosts"
    fetched=1
    if [ -e "$job/source" ]; then
        source=$(cat "$job/source") && { fetch 2>&1; fetched=$?; }
    else  # an agent holds the deploy key, if the repo has one, for the fetch only; in the foreground (-D), it
        # stays in the job's process group, which a cancel or a timeout kills whole
        agent_dir=$(mktemp -d)
        export SSH_AUTH_SOCK="$agent_dir/agent"
        ssh-agent -D -a "$SSH_AUTH_SOCK" >/dev/null &
        agent=$!
        until [ -S "$SSH_AUTH_SOCK" ] || ! kill -0 $agent 2>/dev/null; do sleep 0.01; done
        if received=$(python3 -I -S "$here/receive.py" "$(cat "$job/handoff")"); then
            eval "$received"  # source, PIETER_CLONE_USERNAME, _PASSWORD and _SCOPE (receive.py)
            if [ -n "$PIETER_CLONE_SCOPE" ]; then
                # The URL's user and password reach git from the environment, never a command line (any user may
                # read those), and only for the source's server: not for another that a redirect names
                export PIETER_CLONE_USERNAME PIETER_CLONE_PASSWORD GIT_CONFIG_COUNT=1 \
                    GIT_CONFIG_KEY_0="credential.$PIETER_CLONE_SCOPE.helper" \
                    GIT_CONFIG_VALUE_0='!f() { test "$1" = get && printf "username=%s\npassword=%s\n" "$PIETER_CLONE_USERNAME" "$PIETER_CLONE_PASSWORD"; }; f'
            fi
            fetch 2>&1
            fetched=$?
        fi
        kill $agent
        wait $agent 2>/dev/null
        rm -rf "$agent_dir"
    fi
    if [ $fetched -ne 0 ]; then
        echo "pieter: git clone failed: the job did not run"
        exit 1
    fi
    # A password in the URL stays out of .git/config, so that `git remote -v` cannot print it into the log.
    exec git remote set-url origin "$(cat "$job/source.shown")"
fi
. "$job/params.sh"
# The script file is not executable (a credential is read-only): run its #! line as the kernel would.
read -r first <"$job/script" || true
case "$first" in
    '#!'*) exec ${first#??} "$job/script" ;;
    *) exec /bin/sh "$job/script" ;;
esac
