#!/bin/sh
# The image's self test: the entry point must greet, and the shell tools it relies on must work.
set -eu
out=$(/usr/local/bin/hello)
case "$out" in
  "${GREETING:-Hello}"*) echo "selftest: greeting ok" ;;
  *) echo "selftest: unexpected greeting: $out" >&2; exit 1 ;;
esac
echo "abc" | grep -q b || { echo "selftest: grep broken" >&2; exit 1; }
echo "selftest: passed"
