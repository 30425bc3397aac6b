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
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": [
            "async", "atime", "bind", "defaults", "dev", "diratime", "dirsync", "exec", "mand",
            "noatime", "nodev", "nodiratime", "noexec", "nomand", "norelatime", "nostrictatime",
            "nosuid", "private", "rbind", "relatime", "remount", "ro", "rprivate", "rshared",
            "rslave", "runbindable", "rw", "shared", "slave", "strictatime", "suid", "sync",
            "unbindable"
        ],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"],
            "capabilities": NAMES.to_vec(),
            "cgroup": { "v1": true, "v2": true, "systemd": false, "systemdUser": false, "rdma": false },
            "seccomp": {
                "enabled": true,
                "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS",
                            "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"],
                "operators": ["SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT",
                              "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"],
                "archs": ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM", "SCMP_ARCH_X86_64"],
                "knownFlags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW", "SECCOMP_FILTER_FLAG_TSYNC"],
                "supportedFlags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW", "SECCOMP_FILTER_FLAG_TSYNC"]
            },
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
        let f = super::features();
        assert_eq!(f["linux"]["seccomp"]["enabled"], true);
        assert_eq!(f["hooks"].as_array().unwrap().len(), 6);
    }
}
