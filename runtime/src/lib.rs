//! skiff-runtime: an OCI runtime-spec bundle → an isolated process. Sync; no tokio.
//!
//! - [`spec`]      the `config.json` subset skiff honours
//! - [`plan`]      pure: spec + [`host`] profile → a `LaunchPlan`, refusing what cannot work
//! - [`init`]      the container's first process applying a plan through the [`sys`] seam
//! - [`sys`]       every system-changing syscall the init makes (trait + Linux impl)
//! - [`seccomp`]   `linux.seccomp` compiled to classic BPF, per architecture; an interpreter
//! - [`rootfs`]    resolving container paths inside the rootfs without escaping it
//! - [`cgroup`]    v1/v2 layout from mountinfo, resource translation, group lifecycle
//! - [`device_filter`] v2 device rules as an eBPF program attached to the group
//! - [`caps`]      capability names and sets
//! - [`state`]     container ids, the state file, derived status
//! - [`container`] create / start / state / kill / delete / run / pause / update over a state root
//! - [`exec`]      a new process in a running container
//! - [`launch`]    cloning the init, the parent/child sync protocol, waiting, signal forwarding
//! - [`hooks`]     OCI lifecycle hooks (state JSON on stdin, timeouts)
//! - [`terminal`]  `--console-socket`: a pty whose master goes to the engine
//! - [`features`]  the `features` document and the default `config.json`
//! - [`cli`]       the runc-compatible command line (`skiff runtime …`, `skiff-runc`)

pub mod caps;
pub mod cgroup;
pub mod cli;
pub mod container;
pub mod device_filter;
pub mod exec;
pub mod features;
pub mod hooks;
pub mod host;
pub mod init;
pub mod launch;
pub mod plan;
pub mod rootfs;
pub mod seccomp;
pub mod spec;
pub mod state;
pub mod sys;
pub mod terminal;
