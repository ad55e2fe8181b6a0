# Vault policy for jobforge-controller: check that referenced secret paths exist before creating
# jobs (metadata reads), and read webhook HMAC keys.
path "secret/metadata/jobforge/*" {
  capabilities = ["read", "list"]
}
path "secret/data/jobforge/*" {
  capabilities = ["read"]
}
