#!/usr/bin/env bash
# Creates the Consul ACL policy and token of one jobforge team (namespace) from
# examples/deploy/consul-policy-team.hcl, and prints the token's SecretID (give it to the team as
# CONSUL_HTTP_TOKEN for the jobforge CLI or MCP facade).
#
#   CONSUL_HTTP_ADDR=127.0.0.1:8500 CONSUL_HTTP_TOKEN=<management token> \
#     hack/consul-team-token.sh team-a
#
# Equivalent with the consul CLI:
#   sed 's/<namespace>/team-a/g' examples/deploy/consul-policy-team.hcl > /tmp/team-a.hcl
#   consul acl policy create -name jobforge-team-team-a -rules @/tmp/team-a.hcl
#   consul acl token create -description "jobforge team team-a" -policy-name jobforge-team-team-a
#
# Needs curl and jq. Re-running for an existing team fails at the policy step (the name is taken).
set -euo pipefail

ns=${1:-}
# A namespace is a DNS label; anything else could change the policy's meaning.
if ! [[ $ns =~ ^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$ ]]; then
  echo "usage: $0 <namespace>   (a DNS label: [a-z0-9]([-a-z0-9]*[a-z0-9])?, at most 63)" >&2
  exit 2
fi
: "${CONSUL_HTTP_TOKEN:?set CONSUL_HTTP_TOKEN to a token with acl = \"write\"}"
addr=${CONSUL_HTTP_ADDR:-127.0.0.1:8500}
case $addr in http://* | https://*) ;; *) addr="http://$addr" ;; esac
here=$(cd "$(dirname "$0")/.." && pwd)
rules=$(sed "s/<namespace>/$ns/g" "$here/examples/deploy/consul-policy-team.hcl")
name="jobforge-team-$ns"

put() {
  curl -fsS -X PUT -H "X-Consul-Token: $CONSUL_HTTP_TOKEN" --data-binary @- "$addr$1"
}

jq -n --arg name "$name" --arg rules "$rules" \
  '{Name: $name, Description: "jobforge team namespace", Rules: $rules}' |
  put /v1/acl/policy >/dev/null
jq -n --arg name "$name" --arg ns "$ns" \
  '{Description: ("jobforge team " + $ns), Policies: [{Name: $name}]}' |
  put /v1/acl/token | jq -r .SecretID
