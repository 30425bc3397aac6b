//! OCI lifecycle hooks: each gets the container state JSON on stdin, its own args and env, and
//! is killed when its timeout passes.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::spec::Hook;

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("{kind} hook {path}: starting it")]
    Spawn {
        kind: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{kind} hook {path}: exited with {status}")]
    Failed {
        kind: &'static str,
        path: PathBuf,
        status: String,
    },
    #[error("{kind} hook {path}: still running after its {secs} s timeout (killed)")]
    Timeout {
        kind: &'static str,
        path: PathBuf,
        secs: u64,
    },
}

/// The state document a hook reads, with `status` set for this stage.
pub fn state_json(template: &serde_json::Value, status: &str) -> String {
    let mut s = template.clone();
    s["status"] = status.into();
    s.to_string()
}

/// Runs `hooks` in order; the first failure stops the rest.
pub fn run(kind: &'static str, hooks: &[Hook], state: &str) -> Result<(), HookError> {
    for hook in hooks {
        run_one(kind, hook, state)?;
    }
    Ok(())
}

fn run_one(kind: &'static str, hook: &Hook, state: &str) -> Result<(), HookError> {
    let mut cmd = Command::new(&hook.path);
    if let Some((argv0, rest)) = hook.args.split_first() {
        use std::os::unix::process::CommandExt;
        cmd.arg0(argv0).args(rest);
    }
    cmd.env_clear();
    for kv in &hook.env {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .spawn()
        .map_err(|source| HookError::Spawn {
            kind,
            path: hook.path.clone(),
            source,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that ignores its stdin may close it early: not an error.
        let _ = stdin.write_all(state.as_bytes());
    }
    let deadline = hook
        .timeout
        .map(|s| (s, Instant::now() + Duration::from_secs(s)));
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(source) => {
                return Err(HookError::Spawn {
                    kind,
                    path: hook.path.clone(),
                    source,
                });
            }
        }
        if let Some((secs, at)) = deadline
            && Instant::now() > at
        {
            let _ = child.kill();
            let _ = child.wait();
            return Err(HookError::Timeout {
                kind,
                path: hook.path.clone(),
                secs,
            });
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    if status.success() {
        Ok(())
    } else {
        Err(HookError::Failed {
            kind,
            path: hook.path.clone(),
            status: status.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, timeout: Option<u64>) -> Hook {
        Hook {
            path: "/bin/sh".into(),
            args: vec!["sh".into(), "-c".into(), script.into()],
            env: vec!["X=1".into()],
            timeout,
        }
    }

    #[test]
    fn hooks_get_state_args_and_env_and_fail_clearly() {
        let out = std::env::temp_dir().join(format!("skiff-hook-{}", std::process::id()));
        let script = format!("cat > {}; echo \" $X\" >> {}", out.display(), out.display());
        run("poststart", &[sh(&script, None)], r#"{"status":"running"}"#).unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "{\"status\":\"running\"} 1\n"
        );
        std::fs::remove_file(out).unwrap();

        let err = run("prestart", &[sh("exit 3", None)], "{}").unwrap_err();
        assert!(err.to_string().contains("exit status: 3"), "{err}");
        let err = run("prestart", &[sh("sleep 5", Some(1))], "{}").unwrap_err();
        assert!(matches!(err, HookError::Timeout { .. }), "{err}");
    }
}
