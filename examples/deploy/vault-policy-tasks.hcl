# Vault policy "jobforge" of build, test and publish tasks: read the secrets BuildRequests
# reference (git and registry credentials) under secret/data/jobforge/. The controller puts this
# policy in every task's vault block (configuration `vault_policies`, default ["jobforge"]) and
# Nomad gives each task a token of its own with it; templates read with that token.
# Load it as an operator does:  vault policy write jobforge examples/deploy/vault-policy-tasks.hcl
path "secret/data/jobforge/*" {
  capabilities = ["read"]
}
