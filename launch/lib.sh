# shellcheck shell=bash
# Helpers shared by the launch scripts and the workers' startup script (create.sh copies this
# file into it): quoting, timestamps, reading a path that may be local or gs://.

# The UTC time as every log line of a run starts with it.
utc_now() {
  date -u +%Y-%m-%dT%H:%M:%SZ
}

# One line that a shell reads back as exactly these words, so dry runs can be pasted.
shell_quote() {
  local word line=""
  for word in "$@"; do
    line+="${line:+ }$(quote_word "$word")"
  done
  printf '%s\n' "$line"
}

# A word as the shell's input: bare when safe, else single-quoted (after a --flag= prefix).
quote_word() {
  local safe='^[[:alnum:]_./:=@%+,-]+$' flag='^(--[[:alnum:]-]+=)(.*)$' escaped="'\\''"
  if [[ "$1" =~ $safe ]]; then
    printf '%s\n' "$1"
  elif [[ "$1" =~ $flag ]]; then
    printf '%s\n' "${BASH_REMATCH[1]}$(quote_word "${BASH_REMATCH[2]}")"
  else
    printf '%s\n' "'${1//\'/$escaped}'"
  fi
}

# True when PATH (gs://... or a local path) exists; for gs://, any object under it.
storage_exists() {
  if [[ "$1" == gs://* ]]; then
    gcloud storage ls "$1" > /dev/null 2>&1
  else
    [[ -e "$1" ]]
  fi
}

# PATH's content (gs://... or a local path) to stdout.
storage_cat() {
  if [[ "$1" == gs://* ]]; then
    gcloud storage cat "$1"
  else
    cat "$1"
  fi
}

# Defines `training`, in a worker's REMOTE_DIR: true while its trainer runs (a pid file left by
# a dead one is not enough). One line, so that ssh commands can carry it too.
# shellcheck disable=SC2016,SC2034
TRAINING_FUNCTION='training() { [ -e train.pid ] &&'
# shellcheck disable=SC2016
TRAINING_FUNCTION+=' grep -qs nullearn "/proc/$(cat train.pid)/cmdline"; }'
