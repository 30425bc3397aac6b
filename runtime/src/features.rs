//! `features` (what this runtime supports, as the runtime-spec's features document) and `spec`
//! (a starting `config.json`).

use crate::caps::NAMES;
use crate::plan::RLIMITS;

/// The default `config.json` that `spec` writes, like `runc spec`.
pub const DEFAULT_CONFIG: &str = include_str!("default-config.json");

pub fn features() -> serde_json::Value {
    serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.2.0",
        "hooks": [],
        "mountOptions": [
            "async", "atime", "bind", "defaults", "dev", "diratime", "dirsync", "exec", "mand",
            "noatime", "nodev", "nodiratime", "noexec", "nomand", "norelatime", "nostrictatime",
            "nosuid", "private", "rbind", "relatime", "remount", "ro", "rprivate", "rshared",
            "rslave", "runbindable", "rw", "shared", "slave", "strictatime", "suid", "sync",
            "unbindable"
        ],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "uts"],
            "capabilities": NAMES.to_vec(),
            "cgroup": { "v1": true, "v2": true, "systemd": false, "systemdUser": false, "rdma": false },
            "seccomp": { "enabled": false },
            "apparmor": { "enabled": false },
            "selinux": { "enabled": false },
            "intelRdt": { "enabled": false },
            "mountExtensions": { "idmap": { "enabled": false } }
        },
        "annotations": {
            "org.opencontainers.runc.checkpoint.enabled": "false",
            "dev.skiff.rlimits": RLIMITS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(",")
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_default_config_parses_and_plans() {
        let spec: crate::spec::Spec = serde_json::from_str(super::DEFAULT_CONFIG).unwrap();
        let host = crate::host::HostProfile {
            held_caps: crate::caps::CapSet(u64::MAX),
            last_cap: 40,
            hard_limits: Default::default(),
        };
        let plan = crate::plan::build(&spec, std::path::Path::new("/b"), &host).unwrap();
        assert_eq!(plan.new_namespaces.len(), 6);
    }
}
