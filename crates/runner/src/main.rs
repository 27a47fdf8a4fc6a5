//! `kd`: the kd-sweep command line. Exit codes: 0 ok, 1 some trials did not finish (diverged or
//! failed), 2 bad input or environment (a file that cannot be read or written included), 3
//! stopped on request with trials left. Every command returns a `kd_runner::commands::Done` or a
//! `Failure` (which carries its exit code); `main` prints and exits in one place.

use std::process::ExitCode;

use clap::Parser;
use kd_runner::cli::{Cli, Cmd};

fn main() -> ExitCode {
    // Before anything can touch CUDA: true fp32, GPUs numbered as nvidia-smi does.
    kd_runner::set_cuda_process_env();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let worker = matches!(cli.cmd, Cmd::Worker);
    match kd_runner::commands::execute(cli.cmd) {
        Ok(done) => {
            print!("{}", done.stdout);
            if let Some(line) = done.stderr {
                let tag = if done.code == 0 { "note" } else { "error" };
                eprintln!("{tag}: {line}");
            }
            ExitCode::from(done.code)
        }
        Err(e) => {
            let who = if worker { "kd worker: " } else { "" };
            eprintln!("error: {who}{e}");
            ExitCode::from(e.exit_code())
        }
    }
}
