//! The runc-compatible command line: `skiff runtime [GLOBAL…] COMMAND [FLAGS…] ARGS…`, also
//! reached as `skiff-runc`. Flags follow runc's (urfave/cli) conventions: `--flag value`,
//! `--flag=value`, and single-dash spellings.

use std::io::Write;
use std::path::PathBuf;

use crate::container::{CreateOptions, Runtime, error_chain};
use crate::exec::ExecOptions;
use crate::spec::{Cpu, Memory, Pids, Resources};
use crate::state::ContainerId;

pub const DEFAULT_ROOT: &str = "/run/skiff/runtime";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

struct Global {
    root: PathBuf,
    log: Option<PathBuf>,
    log_format: LogFormat,
}

/// A usage or operation failure, already worded for the user.
#[derive(Debug)]
struct Failure(String);

impl<E: std::error::Error> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure(error_chain(&e))
    }
}

/// Parsed flags of one command.
struct Args {
    values: Vec<(&'static str, String)>,
    switches: Vec<&'static str>,
    positional: Vec<String>,
}

impl Args {
    fn value(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .rev()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
    fn values(&self, name: &str) -> Vec<String> {
        self.values
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
            .collect()
    }
    fn has(&self, name: &str) -> bool {
        self.switches.contains(&name)
    }
}

/// `(canonical name, aliases, takes a value)`.
type FlagSpec = (&'static str, &'static [&'static str], bool);

fn parse(
    args: &[String],
    flags: &[FlagSpec],
    stop_at_positional: bool,
) -> Result<(Args, usize), Failure> {
    let mut out = Args {
        values: Vec::new(),
        switches: Vec::new(),
        positional: Vec::new(),
    };
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        if arg == "--" {
            out.positional.extend(args[i + 1..].iter().cloned());
            return Ok((out, args.len()));
        }
        if arg.starts_with('-') && arg.len() > 1 {
            let body = arg.trim_start_matches('-');
            let (name, inline) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (body, None),
            };
            let Some((canon, _, takes)) = flags
                .iter()
                .find(|(c, a, _)| *c == name || a.contains(&name))
            else {
                return Err(Failure(format!("unknown flag {arg}")));
            };
            if *takes {
                let v = match inline {
                    Some(v) => v,
                    None => {
                        i += 1;
                        args.get(i)
                            .cloned()
                            .ok_or_else(|| Failure(format!("flag {arg} needs a value")))?
                    }
                };
                out.values.push((canon, v));
            } else if inline.as_deref().is_none_or(|v| v != "false") {
                out.switches.push(canon);
            }
        } else if stop_at_positional {
            return Ok((out, i));
        } else {
            out.positional.push(arg.clone());
        }
        i += 1;
    }
    Ok((out, i))
}

const GLOBAL: &[FlagSpec] = &[
    ("root", &[], true),
    ("log", &[], true),
    ("log-format", &[], true),
    ("debug", &[], false),
    ("systemd-cgroup", &[], false),
    ("rootless", &[], true),
    ("criu", &[], true),
    ("version", &["v"], false),
    ("help", &["h"], false),
];

const CREATE: &[FlagSpec] = &[
    ("bundle", &["b"], true),
    ("pid-file", &[], true),
    ("console-socket", &[], true),
    ("no-pivot", &[], false),
    ("no-new-keyring", &[], false),
    ("preserve-fds", &[], true),
    ("detach", &["d"], false),
    ("keep", &[], false),
];

const EXEC: &[FlagSpec] = &[
    ("process", &["p"], true),
    ("env", &["e"], true),
    ("cwd", &[], true),
    ("user", &["u"], true),
    ("tty", &["t"], false),
    ("detach", &["d"], false),
    ("pid-file", &[], true),
    ("console-socket", &[], true),
    ("preserve-fds", &[], true),
    ("cap", &["c"], true),
    ("no-new-privs", &[], false),
    ("additional-gids", &["g"], true),
    ("process-label", &[], true),
    ("apparmor", &[], true),
];

const UPDATE: &[FlagSpec] = &[
    ("resources", &["r"], true),
    ("memory", &["m"], true),
    ("memory-swap", &[], true),
    ("memory-reservation", &[], true),
    ("cpu-shares", &[], true),
    ("cpu-quota", &[], true),
    ("cpu-period", &[], true),
    ("cpuset-cpus", &[], true),
    ("cpuset-mems", &[], true),
    ("pids-limit", &[], true),
];

const USAGE: &str = "\
usage: skiff runtime [--root DIR] [--log FILE] [--log-format text|json] COMMAND [FLAGS] ARGS
commands:
  create [--bundle DIR] [--pid-file FILE] ID   set up a container that waits for start
  start ID                                     run the created container's process
  state ID                                     print its state as JSON
  kill [--all] ID [SIGNAL]                     signal it (default SIGTERM)
  delete [--force] ID                          remove it (--force: kill it first)
  run [--bundle DIR] [--detach] ID             create + start (+ wait, then delete)
  exec [--process FILE | ID CMD…] [--tty] [--detach] [--console-socket S]
                                               run another process in a running container
  pause ID / resume ID                         freeze / thaw every process
  ps [--format table|json] ID [PS ARGS]        the container's processes
  update [--resources FILE|-] [--memory N] [--pids-limit N] [--cpu-*] ID
                                               change resource limits
  list [--format table|json] [--quiet]         list containers
  features                                     print supported features as JSON
  spec [--bundle DIR] [--seccomp]              write a default config.json (with --seccomp:
                                               skiff's default profile, Docker's policy)
";

/// Entry point; returns the process exit code.
pub fn main(args: &[String]) -> i32 {
    let (global, next) = match parse(args, GLOBAL, true) {
        Ok(g) => g,
        Err(Failure(msg)) => {
            eprintln!("skiff runtime: {msg}\n{USAGE}");
            return 2;
        }
    };
    let g = Global {
        root: global
            .value("root")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT)),
        log: global.value("log").map(PathBuf::from),
        log_format: if global.value("log-format") == Some("json") {
            LogFormat::Json
        } else {
            LogFormat::Text
        },
    };
    if global.has("version") {
        println!(
            "skiff-runc version {}\nspec: 1.2.0",
            env!("CARGO_PKG_VERSION")
        );
        return 0;
    }
    let Some(command) = args.get(next) else {
        eprint!("{USAGE}");
        return if global.has("help") { 0 } else { 2 };
    };
    let rest = &args[next + 1..];
    match dispatch(&g, command, rest) {
        Ok(code) => code,
        Err(Failure(msg)) => {
            log_error(&g, &msg);
            eprintln!("skiff runtime {command}: {msg}");
            1
        }
    }
}

fn log_error(g: &Global, msg: &str) {
    let Some(path) = &g.log else { return };
    let time = humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string();
    let line = match g.log_format {
        LogFormat::Json => {
            serde_json::json!({"level": "error", "msg": msg, "time": time}).to_string()
        }
        LogFormat::Text => format!("time=\"{time}\" level=error msg={msg:?}"),
    };
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{line}");
    }
}

fn one_id(args: &Args, command: &str) -> Result<ContainerId, Failure> {
    match args.positional.as_slice() {
        [id] => Ok(id.parse()?),
        _ => Err(Failure(format!("{command} takes exactly one container id"))),
    }
}

fn dispatch(g: &Global, command: &str, rest: &[String]) -> Result<i32, Failure> {
    let rt = Runtime::new(&g.root);
    match command {
        "create" | "run" => {
            let (a, _) = parse(rest, CREATE, false)?;
            let id = one_id(&a, command)?;
            let bundle = PathBuf::from(a.value("bundle").unwrap_or("."));
            let opts = CreateOptions {
                pid_file: a.value("pid-file").map(PathBuf::from),
                console_socket: a.value("console-socket").map(PathBuf::from),
                preserve_fds: preserved_fds(&a)?,
            };
            if command == "create" {
                rt.create(&id, &bundle, &opts)?;
                Ok(0)
            } else {
                Ok(rt.run(&id, &bundle, &opts, a.has("detach"))?)
            }
        }
        "exec" => {
            // Flags end at the id; everything after it is the command.
            let (a, at) = parse(rest, EXEC, true)?;
            let positional = &rest[at..];
            let (id, cmd) = positional
                .split_first()
                .ok_or_else(|| Failure("exec takes a container id".into()))?;
            let id: ContainerId = id.parse()?;
            let user = match a.value("user") {
                Some(u) => Some(parse_user(u)?),
                None => None,
            };
            let opts = ExecOptions {
                process: a.value("process").map(PathBuf::from),
                args: cmd.to_vec(),
                env: a.values("env"),
                cwd: a.value("cwd").map(PathBuf::from),
                user,
                tty: a.has("tty"),
                detach: a.has("detach"),
                pid_file: a.value("pid-file").map(PathBuf::from),
                console_socket: a.value("console-socket").map(PathBuf::from),
                preserve_fds: preserved_fds(&a)?,
                caps: a.values("cap"),
                no_new_privs: a.has("no-new-privs"),
                additional_gids: a
                    .values("additional-gids")
                    .iter()
                    .flat_map(|v| v.split(',').map(str::to_string).collect::<Vec<_>>())
                    .map(|g| {
                        g.parse()
                            .map_err(|_| Failure(format!("--additional-gids {g:?}: not a number")))
                    })
                    .collect::<Result<_, _>>()?,
            };
            for flag in ["process-label", "apparmor"] {
                if a.value(flag).is_some() {
                    return Err(Failure(format!("--{flag}: no LSM support in skiff")));
                }
            }
            Ok(rt.exec(&id, &opts)?)
        }
        "pause" | "resume" => {
            let (a, _) = parse(rest, &[], false)?;
            let id = one_id(&a, command)?;
            if command == "pause" {
                rt.pause(&id)?;
            } else {
                rt.resume(&id)?;
            }
            Ok(0)
        }
        "ps" => {
            let (a, at) = parse(rest, &[("format", &["f"], true)], true)?;
            let id: ContainerId = rest
                .get(at)
                .ok_or_else(|| Failure("ps takes a container id".into()))?
                .parse()?;
            let pids = rt.pids(&id)?;
            if a.value("format") == Some("json") {
                println!("{}", serde_json::to_string(&pids)?);
                return Ok(0);
            }
            let ps_args: Vec<String> = if rest.len() > at + 1 {
                rest[at + 1..].to_vec()
            } else {
                vec!["-ef".into()]
            };
            print!("{}", ps_table(&pids, &ps_args)?);
            Ok(0)
        }
        "update" => {
            let (a, _) = parse(rest, UPDATE, false)?;
            let id = one_id(&a, command)?;
            let resources = update_resources(&a)?;
            rt.update(&id, &resources)?;
            Ok(0)
        }
        "start" => {
            let (a, _) = parse(rest, &[], false)?;
            rt.start(&one_id(&a, command)?)?;
            Ok(0)
        }
        "state" => {
            let (a, _) = parse(rest, &[], false)?;
            let state = rt.state(&one_id(&a, command)?)?;
            println!("{}", serde_json::to_string_pretty(&state)?);
            Ok(0)
        }
        "kill" => {
            let (a, _) = parse(rest, &[("all", &["a"], false)], false)?;
            let (id, sig) = match a.positional.as_slice() {
                [id] => (id, "SIGTERM"),
                [id, sig] => (id, sig.as_str()),
                _ => {
                    return Err(Failure(
                        "kill takes a container id and an optional signal".into(),
                    ));
                }
            };
            let id: ContainerId = id.parse()?;
            let signal =
                parse_signal(sig).ok_or_else(|| Failure(format!("unknown signal {sig:?}")))?;
            rt.kill(&id, signal, a.has("all"))?;
            Ok(0)
        }
        "delete" => {
            let (a, _) = parse(rest, &[("force", &["f"], false)], false)?;
            rt.delete(&one_id(&a, command)?, a.has("force"))?;
            Ok(0)
        }
        "list" => {
            let (a, _) = parse(
                rest,
                &[("format", &["f"], true), ("quiet", &["q"], false)],
                false,
            )?;
            let all = rt.list();
            if a.has("quiet") {
                for (s, _) in &all {
                    println!("{}", s.id);
                }
            } else if a.value("format") == Some("json") {
                let v: Vec<_> = all.iter().map(|(s, st)| s.to_runc_json(*st)).collect();
                println!("{}", serde_json::to_string(&v)?);
            } else {
                println!("ID\tPID\tSTATUS\tBUNDLE\tCREATED\tOWNER");
                for (s, st) in &all {
                    let pid = if *st == crate::state::Status::Stopped {
                        0
                    } else {
                        s.pid
                    };
                    println!(
                        "{}\t{pid}\t{st}\t{}\t{}\t{}",
                        s.id,
                        s.bundle.display(),
                        s.created,
                        s.owner
                    );
                }
            }
            Ok(0)
        }
        "features" => {
            println!(
                "{}",
                serde_json::to_string_pretty(&crate::features::features())?
            );
            Ok(0)
        }
        "spec" => {
            let (a, _) = parse(
                rest,
                &[
                    ("bundle", &["b"], true),
                    ("rootless", &[], false),
                    ("seccomp", &[], false),
                ],
                false,
            )?;
            let path = PathBuf::from(a.value("bundle").unwrap_or(".")).join("config.json");
            let mut config: serde_json::Value =
                serde_json::from_str(crate::features::DEFAULT_CONFIG)?;
            if a.has("seccomp") {
                let bounding: Vec<String> =
                    serde_json::from_value(config["process"]["capabilities"]["bounding"].clone())?;
                let caps = crate::caps::CapSet::from_names(&bounding)?;
                let profile =
                    crate::seccomp::default::profile(caps, crate::seccomp::Arch::native());
                config["linux"]["seccomp"] = serde_json::to_value(profile)?;
            }
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(|e| Failure(format!("writing {}: {e}", path.display())))?;
            f.write_all(serde_json::to_string_pretty(&config)?.as_bytes())?;
            Ok(0)
        }
        "help" => {
            print!("{USAGE}");
            Ok(0)
        }
        other => Err(Failure(format!("unknown command {other:?}\n{USAGE}"))),
    }
}

/// `UID[:GID]` as numbers.
fn parse_user(u: &str) -> Result<(u32, u32), Failure> {
    let bad = || Failure(format!("--user {u:?}: expected UID[:GID]"));
    let (uid, gid) = match u.split_once(':') {
        Some((a, b)) => (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?),
        None => {
            let uid = u.parse().map_err(|_| bad())?;
            (uid, 0)
        }
    };
    Ok((uid, gid))
}

/// `ps ARGS` output, keeping the header and the lines of the container's pids.
fn ps_table(pids: &[i32], args: &[String]) -> Result<String, Failure> {
    let out = std::process::Command::new("ps")
        .args(args)
        .output()
        .map_err(|e| Failure(format!("running ps: {e}")))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let col = header
        .split_whitespace()
        .position(|h| h == "PID")
        .ok_or_else(|| Failure("ps output has no PID column".into()))?;
    let mut table = format!("{header}\n");
    for line in lines {
        let pid = line
            .split_whitespace()
            .nth(col)
            .and_then(|p| p.parse::<i32>().ok());
        if pid.is_some_and(|p| pids.contains(&p)) {
            table.push_str(line);
            table.push('\n');
        }
    }
    Ok(table)
}

/// Bytes with an optional k/m/g suffix (`512m`), or -1.
fn parse_bytes(flag: &str, v: &str) -> Result<i64, Failure> {
    let lower = v.to_ascii_lowercase();
    let trimmed = lower.trim_end_matches('b');
    let (num, mult) = match trimmed.chars().last() {
        Some('k') => (&trimmed[..trimmed.len() - 1], 1i64 << 10),
        Some('m') => (&trimmed[..trimmed.len() - 1], 1 << 20),
        Some('g') => (&trimmed[..trimmed.len() - 1], 1 << 30),
        _ => (trimmed, 1),
    };
    num.parse::<i64>()
        .map(|n| n * mult)
        .map_err(|_| Failure(format!("--{flag} {v:?}: not a size")))
}

/// `update`'s resources: the `--resources` JSON (a file, or `-` for stdin), flags on top.
fn update_resources(a: &Args) -> Result<Resources, Failure> {
    let mut r: Resources = match a.value("resources") {
        Some("-") => serde_json::from_reader(std::io::stdin())?,
        Some(path) => {
            let bytes = std::fs::read(path).map_err(|e| Failure(format!("reading {path}: {e}")))?;
            serde_json::from_slice(&bytes)?
        }
        None => Resources::default(),
    };
    let num = |flag: &str| -> Result<Option<i64>, Failure> {
        a.value(flag)
            .map(|v| {
                v.parse()
                    .map_err(|_| Failure(format!("--{flag} {v:?}: not a number")))
            })
            .transpose()
    };
    let size = |flag: &str| a.value(flag).map(|v| parse_bytes(flag, v)).transpose();
    let mem = r.memory.get_or_insert_with(Memory::default);
    if let Some(v) = size("memory")? {
        mem.limit = Some(v);
    }
    if let Some(v) = size("memory-swap")? {
        mem.swap = Some(v);
    }
    if let Some(v) = size("memory-reservation")? {
        mem.reservation = Some(v);
    }
    if *mem == Memory::default() {
        r.memory = None;
    }
    let cpu = r.cpu.get_or_insert_with(Cpu::default);
    if let Some(v) = num("cpu-shares")? {
        cpu.shares = u64::try_from(v).ok();
    }
    if let Some(v) = num("cpu-quota")? {
        cpu.quota = Some(v);
    }
    if let Some(v) = num("cpu-period")? {
        cpu.period = u64::try_from(v).ok();
    }
    if let Some(v) = a.value("cpuset-cpus") {
        cpu.cpus = Some(v.to_string());
    }
    if let Some(v) = a.value("cpuset-mems") {
        cpu.mems = Some(v.to_string());
    }
    if *cpu == Cpu::default() {
        r.cpu = None;
    }
    if let Some(v) = num("pids-limit")? {
        r.pids = Some(Pids { limit: v });
    }
    Ok(r)
}

/// `--preserve-fds N` plus the socket-activation fds in `LISTEN_FDS`.
fn preserved_fds(a: &Args) -> Result<u32, Failure> {
    let flag: u32 = match a.value("preserve-fds") {
        Some(v) => v
            .parse()
            .map_err(|_| Failure(format!("--preserve-fds {v:?}: not a number")))?,
        None => 0,
    };
    let listen: u32 = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok(flag + listen)
}

/// `KILL`, `SIGKILL`, `sigkill` or `9`.
pub fn parse_signal(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    Some(match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "ILL" => libc::SIGILL,
        "TRAP" => libc::SIGTRAP,
        "ABRT" | "IOT" => libc::SIGABRT,
        "BUS" => libc::SIGBUS,
        "FPE" => libc::SIGFPE,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "SEGV" => libc::SIGSEGV,
        "USR2" => libc::SIGUSR2,
        "PIPE" => libc::SIGPIPE,
        "ALRM" => libc::SIGALRM,
        "TERM" => libc::SIGTERM,
        "CHLD" => libc::SIGCHLD,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "TSTP" => libc::SIGTSTP,
        "TTIN" => libc::SIGTTIN,
        "TTOU" => libc::SIGTTOU,
        "URG" => libc::SIGURG,
        "XCPU" => libc::SIGXCPU,
        "XFSZ" => libc::SIGXFSZ,
        "VTALRM" => libc::SIGVTALRM,
        "PROF" => libc::SIGPROF,
        "WINCH" => libc::SIGWINCH,
        "IO" | "POLL" => libc::SIGIO,
        "PWR" => libc::SIGPWR,
        "SYS" => libc::SIGSYS,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn runc_style_flags() {
        let (a, _) = parse(
            &s(&["-b", "/x", "--pid-file=/p", "--no-new-keyring", "id1"]),
            CREATE,
            false,
        )
        .unwrap();
        assert_eq!(a.value("bundle"), Some("/x"));
        assert_eq!(a.value("pid-file"), Some("/p"));
        assert!(a.has("no-new-keyring"));
        assert_eq!(a.positional, vec!["id1"]);
        let (g, next) = parse(
            &s(&["--root", "/r", "--log-format", "json", "state", "x"]),
            GLOBAL,
            true,
        )
        .unwrap();
        assert_eq!(g.value("root"), Some("/r"));
        assert_eq!(next, 4);
        assert!(parse(&s(&["--bogus", "x"]), CREATE, false).is_err());
    }

    #[test]
    fn signals() {
        assert_eq!(parse_signal("KILL"), Some(9));
        assert_eq!(parse_signal("sigterm"), Some(15));
        assert_eq!(parse_signal("10"), Some(10));
        assert_eq!(parse_signal("FOO"), None);
        assert_eq!(parse_signal("0"), None);
    }
}
