//! Linux capability names and the bit sets the init process applies.

use serde::{Deserialize, Serialize};

/// Capability names in kernel bit order (`include/uapi/linux/capability.h`).
pub const NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

pub const CAP_SYS_RESOURCE: u32 = 24;

/// A set of capabilities as a bit mask (bit N = capability N).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapSet(pub u64);

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("unknown capability {0:?}")]
pub struct UnknownCap(pub String);

impl CapSet {
    /// Parses names such as `CAP_KILL` (the `CAP_` prefix is optional, case-insensitive).
    pub fn from_names<S: AsRef<str>>(names: &[S]) -> Result<CapSet, UnknownCap> {
        let mut bits = 0u64;
        for name in names {
            let name = name.as_ref();
            let upper = name.to_ascii_uppercase();
            let full = if upper.starts_with("CAP_") {
                upper
            } else {
                format!("CAP_{upper}")
            };
            let bit = NAMES
                .iter()
                .position(|n| *n == full)
                .ok_or_else(|| UnknownCap(name.to_string()))?;
            bits |= 1 << bit;
        }
        Ok(CapSet(bits))
    }

    pub fn contains(self, bit: u32) -> bool {
        self.0 & (1 << bit) != 0
    }

    /// The bits of this set missing from `held`.
    pub fn missing_from(self, held: CapSet) -> CapSet {
        CapSet(self.0 & !held.0)
    }

    pub fn names(self) -> Vec<&'static str> {
        NAMES
            .iter()
            .enumerate()
            .filter(|(bit, _)| self.0 & (1 << bit) != 0)
            .map(|(_, n)| *n)
            .collect()
    }
}

/// The five sets a process gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessCaps {
    pub bounding: CapSet,
    pub effective: CapSet,
    pub inheritable: CapSet,
    pub permitted: CapSet,
    pub ambient: CapSet,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_is_refused() {
        let set = CapSet::from_names(&["CAP_KILL", "net_bind_service", "CAP_CHOWN"]).unwrap();
        assert_eq!(set.0, 1 << 5 | 1 << 10 | 1);
        assert_eq!(
            set.names(),
            vec!["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
        );
        assert_eq!(
            CapSet::from_names(&["CAP_FLY"]),
            Err(UnknownCap("CAP_FLY".into()))
        );
    }
}
