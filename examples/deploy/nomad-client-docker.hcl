# Nomad client configuration for jobforge's `docker` profile (jobforge-controller --profile docker).
#
# buildah runs inside the build container UNPRIVILEGED: vfs storage, chroot isolation, as root in
# the container (no user namespace). What it needs, measured on Debian 12 with podman 4.3 + runc
# (tests/tests/e2e_docker.rs):
#
# - capabilities: Docker's default set minus NET_RAW, which is Nomad's default `allow_caps`.
#   CHOWN, DAC_OVERRIDE, FOWNER, FSETID: extracting layers and `COPY` keep file owners and modes;
#   SETUID, SETGID: `RUN` steps that switch users (`USER`, `su`, package scripts); SETFCAP: layers
#   that carry file capabilities (e.g. ping in Debian's iputils); MKNOD: device nodes in base
#   images; SYS_CHROOT: chroot isolation of `RUN`; KILL, AUDIT_WRITE, NET_BIND_SERVICE, SETPCAP:
#   Docker defaults that tools in images expect. jobforge asks for SETUID/SETGID/SETFCAP explicitly
#   (`cap_add`) so that a client whose allow_caps lacks them fails the task loudly.
# - no `privileged`, no SYS_ADMIN, no devices (/dev/fuse is only for fuse-overlayfs, which vfs
#   does not use), no security options: the end-to-end test runs build, test and publish with
#   exactly the set above and the engine's default seccomp profile.
# - vfs copies each layer: give build tasks disk (spec.resource_limits.disk) for about twice the
#   image size, and memory for the largest `RUN` step.
#
# If a host's seccomp or AppArmor profile is stricter than the engine's default and a `RUN` step
# fails with EPERM, read the denial in the audit log before loosening anything; never grant
# `privileged`.
plugin "docker" {
  config {
    # Nomad's default (capabilities.NomadDefaults): Docker's defaults without NET_RAW.
    allow_caps = ["audit_write", "chown", "dac_override", "fowner", "fsetid", "kill", "mknod",
                  "net_bind_service", "setfcap", "setgid", "setpcap", "setuid", "sys_chroot"]

    # Never needed by jobforge.
    allow_privileged = false

    # Build, test and publish bind only their own task directories.
    volumes {
      enabled = false
    }

    # Pull credentials of the registry holding the tool image and the temporary images the test
    # phase runs (per-job credentials would be visible to the user's tests).
    auth {
      config = "/etc/nomad.d/docker-auth.json"
    }

    gc {
      image       = true
      image_delay = "3m"
      container   = true
    }
  }
}
