#!/bin/sh
# Stand-in for bwrap during README screenshots only: GIMP 3.2's image loaders (glycin) start
# each loader inside bwrap, which needs user namespaces that containers often lack. This runs
# the loader directly: it skips bwrap's own options and executes the command after them.
while [ $# -gt 0 ]; do
  case "$1" in
    --unshare-all|--die-with-parent|--clearenv|--new-session) shift ;;
    --chdir|--dev|--tmpfs|--proc|--seccomp|--unsetenv) shift 2 ;;
    --ro-bind|--ro-bind-try|--bind|--bind-try|--dev-bind|--symlink|--setenv) shift 3 ;;
    --*) echo "no_sandbox_bwrap: unknown option $1" >&2; exit 1 ;;
    *) exec "$@" ;;
  esac
done
