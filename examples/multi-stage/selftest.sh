#!/bin/sh
# The image's self test: the app runs, carries a version, and the image is only the runtime
# stage (no sources, no debug stage, no secret).
set -eu
out=$(/usr/local/bin/app)
case "$out" in
  "multi-stage app @"*) echo "selftest: the version placeholder was not replaced" >&2; exit 1 ;;
  "multi-stage app "*) echo "selftest: app ok: $(echo "$out" | head -n1)" ;;
  *) echo "selftest: unexpected output: $out" >&2; exit 1 ;;
esac
for p in /src /debug /run/secrets/release_token; do
  if [ -e "$p" ]; then echo "selftest: $p must not be in the runtime image" >&2; exit 1; fi
done
grep -q '^12\.' /etc/debian_version || { echo "selftest: not Debian 12 (bookworm)" >&2; exit 1; }
echo "selftest: passed"
