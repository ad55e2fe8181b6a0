# Vault policy for jobforge-controller: check that referenced secret paths exist before creating
# jobs (metadata reads), and read webhook HMAC keys.
path "secret/metadata/jobforge/*" {
  capabilities = ["read", "list"]
}
path "secret/data/jobforge/*" {
  capabilities = ["read"]
}
# Issue 20: sign published images (and their provenance) with the transit key named in
# <prefix>/config `signing.transit_key` (here the default name `jobforge`), and read its public
# key for `jobforge verify`. Only the controller's token holds this; task tokens never do.
path "transit/sign/jobforge" {
  capabilities = ["update"]
}
path "transit/keys/jobforge" {
  capabilities = ["read"]
}
