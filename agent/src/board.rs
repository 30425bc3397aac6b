//! Board configurations (`board-configs/*.toml`): which Rust target a board's binary is built
//! for, which OCI platform it pulls, where its data lives, what cgroup layout and A/B mechanism
//! it has, and its resource budgets. Unknown keys are errors, so a typo never passes silently.
//!
//! ```toml
//! name = "Raspberry Pi 4 / 5 (64-bit OS)"
//! rust_target = "aarch64-unknown-linux-musl"
//! data_root = "/var/lib/skiff"
//! cgroup = "v2"
//! ab_mechanism = "rpi-tryboot"
//! [platform]
//! os = "linux"
//! architecture = "arm64"
//! variant = "v8"
//! [budget]
//! agent_memory_mib = 48
//! data_disk_mib = 2048
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoardConfig {
    /// Human-readable board name.
    pub name: String,
    /// The Rust target triple `cross/build --board` builds for.
    pub rust_target: RustTarget,
    /// The OCI platform selected from multi-arch images.
    pub platform: Platform,
    /// The data root (state, blobs, snapshots, volumes).
    pub data_root: PathBuf,
    /// The cgroup layout the board's OS mounts.
    pub cgroup: CgroupLayout,
    /// How the agent's A/B self-update switches slots.
    pub ab_mechanism: AbMechanism,
    pub budget: Budget,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum RustTarget {
    #[serde(rename = "aarch64-unknown-linux-musl")]
    Aarch64Musl,
    #[serde(rename = "x86_64-unknown-linux-musl")]
    X86_64Musl,
    #[serde(rename = "armv7-unknown-linux-gnueabihf")]
    Armv7Gnueabihf,
    #[serde(rename = "arm-unknown-linux-gnueabi")]
    ArmGnueabi,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Platform {
    pub os: String,
    pub architecture: Architecture,
    pub variant: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    Amd64,
    Arm64,
    Arm,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupLayout {
    V1,
    V2,
    Hybrid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AbMechanism {
    None,
    RpiTryboot,
    UbootEnv,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// Resident memory the agent may use, MiB.
    pub agent_memory_mib: u32,
    /// Disk for the data root, MiB.
    pub data_disk_mib: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum BoardError {
    #[error("reading board config {0}")]
    Read(PathBuf, #[source] std::io::Error),
    #[error("board config {0}")]
    Parse(PathBuf, #[source] toml::de::Error),
    #[error("board config {path}: {problem}")]
    Invalid { path: PathBuf, problem: String },
}

impl BoardConfig {
    pub fn load(path: &Path) -> Result<BoardConfig, BoardError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| BoardError::Read(path.to_path_buf(), e))?;
        let cfg: BoardConfig =
            toml::from_str(&text).map_err(|e| BoardError::Parse(path.to_path_buf(), e))?;
        cfg.check().map_err(|problem| BoardError::Invalid {
            path: path.to_path_buf(),
            problem,
        })?;
        Ok(cfg)
    }

    /// The platform this board pulls from multi-arch images.
    pub fn image_platform(&self) -> crate::platform::Platform {
        let arch = match self.platform.architecture {
            Architecture::Amd64 => "amd64",
            Architecture::Arm64 => "arm64",
            Architecture::Arm => "arm",
        };
        crate::platform::Platform::new(&self.platform.os, arch, self.platform.variant.as_deref())
    }

    /// The target and the platform must describe the same CPU.
    fn check(&self) -> Result<(), String> {
        let want = match self.rust_target {
            RustTarget::Aarch64Musl => (Architecture::Arm64, None),
            RustTarget::X86_64Musl => (Architecture::Amd64, None),
            RustTarget::Armv7Gnueabihf => (Architecture::Arm, Some("v7")),
            RustTarget::ArmGnueabi => (Architecture::Arm, Some("v6")),
        };
        if self.platform.architecture != want.0 {
            return Err(format!(
                "platform.architecture {:?} does not match rust_target {:?}",
                self.platform.architecture, self.rust_target
            ));
        }
        if let Some(v) = want.1
            && self.platform.variant.as_deref() != Some(v)
        {
            return Err(format!(
                "platform.variant must be {v:?} for {:?}",
                self.rust_target
            ));
        }
        if self.platform.os != "linux" {
            return Err(format!("platform.os {:?} is not linux", self.platform.os));
        }
        if !self.data_root.is_absolute() {
            return Err("data_root must be absolute".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../board-configs")
    }

    #[test]
    fn every_board_config_parses() {
        let mut n = 0;
        for entry in std::fs::read_dir(dir()).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                BoardConfig::load(&path).unwrap_or_else(|e| panic!("{e}: {:?}", e.source()));
                n += 1;
            }
        }
        assert!(n >= 6, "expected at least 6 boards, found {n}");
    }

    #[test]
    fn unknown_keys_and_mismatches_are_refused() {
        let good = std::fs::read_to_string(dir().join("rpi4.toml")).unwrap();
        let typo = good.replace("data_root", "data_rot");
        assert!(toml::from_str::<BoardConfig>(&typo).is_err());
        let cfg: BoardConfig = toml::from_str(&good.replace("arm64", "amd64")).unwrap();
        assert!(cfg.check().is_err());
    }
    use std::error::Error as _;

    #[test]
    fn boards_name_their_image_platform() {
        let zero = BoardConfig::load(&dir().join("rpi-zero.toml")).unwrap();
        assert_eq!(zero.image_platform().to_string(), "linux/arm/v6");
        let pi4 = BoardConfig::load(&dir().join("rpi4.toml")).unwrap();
        assert_eq!(pi4.image_platform().to_string(), "linux/arm64/v8");
    }
}
