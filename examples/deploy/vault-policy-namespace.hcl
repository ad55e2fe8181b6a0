# Vault policy template of one team's tasks: "jobforge-<namespace>", the only policy the controller
# puts in the vault block of namespace <namespace>'s build, test and publish tasks (configuration
# tenancy.vault_policy, default "jobforge-{namespace}"). Nomad derives each task a token with it;
# the task's templates read its git and registry credentials and test secrets with that token,
# so a team's task reads its own team's secrets and nothing else (Vault answers 403 elsewhere).
#
# Replace every <namespace> with the team's namespace (a DNS label), e.g. with
# hack/vault-team-policy.sh, which also loads it into Vault. The tests (tests/src/vault_policies.rs)
# and the quickstart load this file the same way. The path must match the controller's
# tenancy.vault_path_prefix (default secret/data/jobforge/{namespace}/): change both together.

path "secret/data/jobforge/<namespace>/*" {
  capabilities = ["read"]
}
