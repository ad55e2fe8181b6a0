#!/bin/sh
# The image's entry point: prints a greeting and facts about the image it runs in.
set -eu
echo "${GREETING:-Hello}"
echo "running on $(uname -s) with $(ls /bin | wc -l) busybox applets"
