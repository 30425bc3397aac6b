//! The `skiff` multi-call binary. The role is chosen from argv0 and the first argument before
//! any thread exists: the runtime role (`skiff runtime …`, or this file invoked as `skiff-runc`)
//! must stay single-threaded because it clones container processes.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let argv0 = args
        .first()
        .map(|a| a.rsplit('/').next().unwrap_or(a).to_string())
        .unwrap_or_default();
    let code = if argv0 == "skiff-runc" {
        skiff_runtime::cli::main(&args[1..])
    } else {
        match args.get(1).map(String::as_str) {
            Some("runtime") => skiff_runtime::cli::main(&args[2..]),
            Some("--version" | "-V" | "version") => {
                println!("{}", skiff_agent::version());
                0
            }
            Some("--help" | "-h" | "help") | None => {
                print!("{}", skiff_agent::USAGE);
                i32::from(args.len() < 2) * 2
            }
            Some(other) => {
                eprintln!("skiff: unknown command {other:?}\n{}", skiff_agent::USAGE);
                2
            }
        }
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
