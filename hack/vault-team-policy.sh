#!/usr/bin/env bash
# Creates (or updates) the Vault ACL policy of one jobforge team (namespace), "jobforge-<namespace>",
# from examples/deploy/vault-policy-namespace.hcl: read secret/data/jobforge/<namespace>/*, nothing
# else. The controller gives every task of that namespace this one policy (see docs/tenancy.md).
#
#   VAULT_ADDR=http://127.0.0.1:8200 VAULT_TOKEN=<token with sys/policies/acl write> \
#     hack/vault-team-policy.sh team-a
#
# Equivalent with the vault CLI:
#   sed 's/<namespace>/team-a/g' examples/deploy/vault-policy-namespace.hcl |
#     vault policy write jobforge-team-a -
#
# A custom tenancy.vault_policy or tenancy.vault_path_prefix in <prefix>/config needs a policy
# name (JOBFORGE_VAULT_POLICY, with {namespace}) and file (JOBFORGE_VAULT_POLICY_FILE, with
# <namespace>) to match. Needs curl, and jq or python3. Re-running replaces the policy (PUT is
# idempotent). Prints the policy's name.
set -euo pipefail

ns=${1:-}
# A namespace is a DNS label; anything else could change the policy's meaning.
if ! [[ $ns =~ ^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$ ]]; then
  echo "usage: $0 <namespace>   (a DNS label: [a-z0-9]([-a-z0-9]*[a-z0-9])?, at most 63)" >&2
  exit 2
fi
: "${VAULT_TOKEN:?set VAULT_TOKEN to a token that may write sys/policies/acl}"
addr=${VAULT_ADDR:-http://127.0.0.1:8200}
here=$(cd "$(dirname "$0")/.." && pwd)
file=${JOBFORGE_VAULT_POLICY_FILE:-$here/examples/deploy/vault-policy-namespace.hcl}
template=${JOBFORGE_VAULT_POLICY:-jobforge-{namespace\}}
name=${template//\{namespace\}/$ns}
if ! [[ $name =~ ^[A-Za-z0-9_.-]+$ ]]; then
  echo "$0: policy name $name is not a Vault policy name ([A-Za-z0-9_.-]+)" >&2
  exit 2
fi
rules=$(sed "s/<namespace>/$ns/g" "$file")

json_policy() {
  if command -v jq >/dev/null; then
    jq -n --arg policy "$1" '{policy: $policy}'
  else
    python3 -c 'import json, sys; print(json.dumps({"policy": sys.argv[1]}))' "$1"
  fi
}
json_policy "$rules" |
  curl -fsS -X PUT -H "X-Vault-Token: $VAULT_TOKEN" -H 'Content-Type: application/json' \
    --data-binary @- "${addr%/}/v1/sys/policies/acl/$name" >/dev/null
echo "$name"
