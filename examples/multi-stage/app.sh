#!/bin/sh
# The application: prints its version (set at build time from the build arg APP_VERSION) and
# the Debian release it runs on.
set -eu
echo "multi-stage app @APP_VERSION@"
echo "on Debian $(cat /etc/debian_version)"
