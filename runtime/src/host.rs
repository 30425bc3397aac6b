//! What the runtime itself holds on this host: capabilities, hard rlimits, the last capability
//! the kernel knows. A bundle may ask for no more than this.

use std::collections::BTreeMap;

use crate::caps::CapSet;
use crate::plan::RLIMITS;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostProfile {
    /// The runtime's own effective set: what a child may be given.
    pub held_caps: CapSet,
    /// The highest capability number this kernel knows.
    pub last_cap: u32,
    /// Hard limits the runtime holds now, by `RLIMIT_*` name.
    pub hard_limits: BTreeMap<&'static str, u64>,
}

impl HostProfile {
    pub fn detect() -> HostProfile {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let held = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0);
        let last_cap = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(40);
        let mut hard_limits = BTreeMap::new();
        for (name, resource) in RLIMITS {
            let mut lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: getrlimit writes one rlimit struct we own.
            if unsafe { libc::getrlimit(resource as _, &mut lim) } == 0 {
                hard_limits.insert(name, lim.rlim_max as u64);
            }
        }
        HostProfile {
            held_caps: CapSet(held),
            last_cap,
            hard_limits,
        }
    }

    pub fn has_cap(&self, bit: u32) -> bool {
        self.held_caps.contains(bit)
    }
}
