//! Image references as Docker parses them: `busybox` → `docker.io/library/busybox:latest`,
//! `host:port/repo:tag`, `repo@sha256:…`, tag plus digest.
//!
//! Hand-written rather than oci-spec's regex-based parser: compiling that regex cost ~25 ms of
//! CPU per command on the dev VM (every verb parses a reference), which is most of a warm
//! pull, and far more on an ARMv6 board (docs/decisions/0003). A test checks that both
//! parsers agree on a table of inputs.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("empty reference")]
    Empty,
    #[error(
        "invalid repository name {0:?}: lowercase letters, digits and separators (. _ __ -) between them"
    )]
    Repository(String),
    #[error("invalid tag {0:?}: at most 128 of A-Z a-z 0-9 _ . -, not starting with . or -")]
    Tag(String),
    #[error("invalid digest {0:?}: expected sha256:<64 hex> or sha512:<128 hex>")]
    Digest(String),
    #[error("invalid registry host {0:?}")]
    Registry(String),
    #[error("repository name longer than 255 characters")]
    TooLong,
}

fn component_ok(c: &str) -> bool {
    // [a-z0-9]+ ((\.|_|__|-+) [a-z0-9]+)*
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

fn tag_ok(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

fn digest_ok(d: &str) -> bool {
    let Some((alg, hex)) = d.split_once(':') else {
        return false;
    };
    let len = match alg {
        "sha256" => 64,
        "sha512" => 128,
        _ => return false,
    };
    hex.len() == len
        && hex
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

fn registry_ok(r: &str) -> bool {
    let (host, port) = match r.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || r.starts_with('[') => (h, Some(p)),
        _ => (r, None),
    };
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|c| c.is_ascii_digit()));
    let host_ok = if host.starts_with('[') {
        host.ends_with(']')
            && host[1..host.len() - 1]
                .parse::<std::net::Ipv6Addr>()
                .is_ok()
    } else {
        !host.is_empty()
            && host.split('.').all(|l| {
                !l.is_empty()
                    && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            })
    };
    port_ok && host_ok
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(ReferenceError::Empty);
        }
        let (name, digest) = match s.split_once('@') {
            Some((n, d)) => {
                if !digest_ok(d) {
                    return Err(ReferenceError::Digest(d.to_string()));
                }
                (n, Some(d.to_string()))
            }
            None => (s, None),
        };
        // A tag follows the last ':' after the last '/' (a ':' before it is a port).
        let last_slash = name.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name[last_slash..].rfind(':') {
            Some(i) => {
                let t = &name[last_slash + i + 1..];
                if !tag_ok(t) {
                    return Err(ReferenceError::Tag(t.to_string()));
                }
                (&name[..last_slash + i], Some(t.to_string()))
            }
            None => (name, None),
        };
        let (mut registry, mut repository) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                if !registry_ok(first) {
                    return Err(ReferenceError::Registry(first.to_string()));
                }
                (first.to_string(), rest.to_string())
            }
            _ => ("docker.io".to_string(), name.to_string()),
        };
        if registry == "index.docker.io" {
            registry = "docker.io".into();
        }
        if registry == "docker.io" && !repository.contains('/') {
            repository = format!("library/{repository}");
        }
        if !repository.split('/').all(component_ok) {
            return Err(ReferenceError::Repository(repository));
        }
        if registry.len() + 1 + repository.len() > 255 {
            return Err(ReferenceError::TooLong);
        }
        let tag = if tag.is_none() && digest.is_none() {
            Some("latest".into())
        } else {
            tag
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }
}

impl Reference {
    /// The registry as named (`docker.io` for Docker Hub).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The host to talk to (Docker Hub's API lives at `registry-1.docker.io`).
    pub fn resolve_registry(&self) -> &str {
        if self.registry == "docker.io" {
            "registry-1.docker.io"
        } else {
            &self.registry
        }
    }

    pub fn repository(&self) -> &str {
        &self.repository
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// `registry/repository[:tag][@digest]`.
    pub fn whole(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:bf0f97ec70f1aca3c1a2328627b0bd8431361228b73392fa7d8632d3a6f7880f";

    #[test]
    fn docker_normalisation() {
        let cases = [
            ("busybox", "docker.io/library/busybox:latest"),
            ("library/busybox:1.36", "docker.io/library/busybox:1.36"),
            ("index.docker.io/foo/bar", "docker.io/foo/bar:latest"),
            (
                "127.0.0.1:5000/busybox:latest",
                "127.0.0.1:5000/busybox:latest",
            ),
            ("localhost/app", "localhost/app:latest"),
            (
                "reg.example:5000/a/b/c:v1.2-rc_3",
                "reg.example:5000/a/b/c:v1.2-rc_3",
            ),
            ("test.com:5000", "docker.io/library/test.com:5000"),
            ("foo_bar.com:8080", "docker.io/library/foo_bar.com:8080"),
        ];
        for (input, want) in cases {
            assert_eq!(input.parse::<Reference>().unwrap().whole(), want, "{input}");
        }
        let with_digest = format!("ghcr.io/o/r@{D}").parse::<Reference>().unwrap();
        assert_eq!((with_digest.tag(), with_digest.digest()), (None, Some(D)));
        let both = format!("ghcr.io/o/r:v1@{D}").parse::<Reference>().unwrap();
        assert_eq!(both.whole(), format!("ghcr.io/o/r:v1@{D}"));
        assert_eq!(
            "busybox".parse::<Reference>().unwrap().resolve_registry(),
            "registry-1.docker.io"
        );
    }

    #[test]
    fn invalid_references_are_refused() {
        for bad in [
            "",
            "Upper/case",
            "a//b",
            "a:",
            "a@sha256:short",
            "a/b:-tag",
            "-a",
            "a..b",
            "reg.example:99999999/a",
            "Not A Reference",
        ] {
            assert!(bad.parse::<Reference>().is_err(), "{bad}");
        }
    }

    /// The same answers as oci-spec's parser (what DESIGN.md named) on a table of inputs.
    #[test]
    fn agrees_with_oci_spec() {
        let inputs = [
            "busybox",
            "busybox:1",
            "library/busybox",
            "docker.io/busybox",
            "index.docker.io/busybox",
            "127.0.0.1:5000/busybox:latest",
            "localhost:5000/a/b:c",
            "reg.example/a_b/c__d/e-f:g.h",
            "test.com:tag",
            "test.com:5000",
            "lowercase:Uppercase",
        ];
        for input in inputs {
            let ours = input.parse::<Reference>().unwrap();
            let theirs: oci_spec::distribution::Reference = input.parse().unwrap();
            assert_eq!(ours.whole(), theirs.whole(), "{input}");
            assert_eq!(ours.repository(), theirs.repository(), "{input}");
        }
        // Where oci-spec is lenient (it takes "Upper/case"), skiff follows Docker: see
        // invalid_references_are_refused.
    }
}
