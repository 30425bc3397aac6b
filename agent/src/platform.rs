//! Image platforms (`linux/arm64`, `linux/arm/v7`, …) and choosing one from an index with the
//! rules containerd uses: architectures normalised (`x86_64` = `amd64`, `aarch64` = `arm64`),
//! an arm64 image without a variant is v8, and an arm/v7 host can run v6 and v5 images (the
//! best, i.e. highest, compatible variant wins).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("invalid platform {0:?}: expected OS/ARCH[/VARIANT], e.g. linux/arm64 or linux/arm/v7")]
pub struct InvalidPlatform(pub String);

impl FromStr for Platform {
    type Err = InvalidPlatform;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split('/').collect();
        let bad = || InvalidPlatform(s.to_string());
        let (os, arch, variant) = match parts.as_slice() {
            [os, arch] => (*os, *arch, None),
            [os, arch, v] => (*os, *arch, Some(v.to_string())),
            _ => return Err(bad()),
        };
        if os.is_empty() || arch.is_empty() {
            return Err(bad());
        }
        Ok(Platform::new(os, arch, variant.as_deref()))
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

fn normalize_arch(arch: &str, variant: Option<&str>) -> (String, Option<String>) {
    let arch = arch.to_ascii_lowercase();
    let variant = variant
        .map(str::to_ascii_lowercase)
        .filter(|v| !v.is_empty());
    match arch.as_str() {
        "x86_64" | "x86-64" | "amd64" => ("amd64".into(), None),
        "aarch64" | "arm64" => ("arm64".into(), Some(variant.unwrap_or_else(|| "v8".into()))),
        "armhf" => ("arm".into(), Some("v7".into())),
        "armel" => ("arm".into(), Some("v6".into())),
        "arm" => ("arm".into(), Some(variant.unwrap_or_else(|| "v7".into()))),
        "i386" | "386" => ("386".into(), None),
        _ => (arch, variant),
    }
}

impl Platform {
    pub fn new(os: &str, arch: &str, variant: Option<&str>) -> Platform {
        let (architecture, variant) = normalize_arch(arch, variant);
        Platform {
            os: os.to_ascii_lowercase(),
            architecture,
            variant,
        }
    }

    /// The platform this binary was built for.
    pub fn host() -> Platform {
        let arch = if cfg!(target_arch = "aarch64") {
            "arm64"
        } else if cfg!(target_arch = "arm") {
            "arm"
        } else {
            "amd64"
        };
        let variant = if cfg!(target_arch = "arm") && !cfg!(target_feature = "v7") {
            Some("v6")
        } else {
            None
        };
        Platform::new("linux", arch, variant)
    }

    /// How well an image for `other` runs here: `None` if it cannot, higher is better.
    pub fn score(&self, other: &Platform) -> Option<u32> {
        if self.os != other.os || self.architecture != other.architecture {
            return None;
        }
        let num = |v: &Option<String>| {
            v.as_deref()
                .and_then(|v| v.trim_start_matches('v').parse::<u32>().ok())
        };
        match (num(&self.variant), num(&other.variant)) {
            (Some(mine), Some(theirs)) if self.architecture == "arm" => {
                (theirs <= mine).then_some(theirs)
            }
            _ if self.variant == other.variant => Some(100),
            (Some(_), None) | (None, Some(_)) => Some(50),
            _ => None,
        }
    }

    /// The best of `candidates` for this platform, by index.
    pub fn best<'a>(&self, candidates: impl IntoIterator<Item = &'a Platform>) -> Option<usize> {
        candidates
            .into_iter()
            .enumerate()
            .filter_map(|(i, p)| self.score(p).map(|s| (s, i)))
            .max_by_key(|(s, i)| (*s, std::cmp::Reverse(*i)))
            .map(|(_, i)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        s.parse().unwrap()
    }

    #[test]
    fn parse_and_normalise() {
        assert_eq!(p("linux/x86_64"), p("linux/amd64"));
        assert_eq!(p("linux/aarch64"), p("linux/arm64/v8"));
        assert_eq!(p("linux/arm").to_string(), "linux/arm/v7");
        assert!("linux".parse::<Platform>().is_err());
    }

    #[test]
    fn arm_rules() {
        let index = [
            p("linux/amd64"),
            p("linux/arm64"),
            p("linux/arm/v6"),
            p("linux/arm/v7"),
        ];
        assert_eq!(p("linux/arm/v7").best(&index), Some(3));
        assert_eq!(p("linux/arm/v6").best(&index), Some(2));
        assert_eq!(p("linux/arm64").best(&index), Some(1));
        assert_eq!(p("linux/arm/v5").best(&index), None);
        assert_eq!(p("linux/riscv64").best(&index), None);
        // a v7 host takes v6 when no v7 image exists
        assert_eq!(p("linux/arm/v7").best(&index[..3]), Some(2));
    }
}
