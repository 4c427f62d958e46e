//! `statejournal`: the demo streaming job, and the operator's tools for journal directories.
//!
//! Every subcommand prints one clear sentence (with file and byte offset where there is one) and
//! exits non-zero on failure; none panics on a damaged or foreign directory. Exit codes:
//! 0 success (for `verify`: sound), 1 error, 2 usage error, 3 `verify`: damage the default open
//! repairs without losing an acknowledged record (a torn tail), 4 `verify`: damage to durable data
//! or to the log's structure.

/// `println!` that never panics: when standard output is a closed pipe (`statejournal verify |
/// head`) the process exits quietly with status 141, like a process killed by SIGPIPE.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout(), $($arg)*) {
            $crate::output_failed(e);
        }
    }};
}

/// `print!` that never panics (see [`outln!`]).
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = write!(std::io::stdout(), $($arg)*) {
            $crate::output_failed(e);
        }
    }};
}

mod demo;
mod dump;
mod fmt;
mod look;
mod plan;
mod remote;
mod repair;
mod stream;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code of an error.
pub const EXIT_ERROR: u8 = 1;
/// `verify`: damage that the default open repairs without losing an acknowledged record.
pub const EXIT_REPAIRABLE: u8 = 3;
/// `verify`: damage to durable data or to the log's structure.
pub const EXIT_CORRUPT: u8 = 4;

/// A failure to report: one sentence.
#[derive(Debug)]
pub struct CliError(pub String);

impl<E: std::fmt::Display> From<E> for CliError {
    fn from(e: E) -> Self {
        CliError(e.to_string())
    }
}

/// What a subcommand returns.
pub type CliResult = Result<ExitCode, CliError>;

#[derive(Parser)]
#[command(
    name = "statejournal",
    version,
    about = "Keyed state for stream processing, made durable by a checksummed log: a demo job and tools to look inside a journal directory.",
    after_help = "Examples:\n  statejournal demo                       run the demo job in ./statejournal-demo (kill it and run it again)\n  statejournal inspect ./statejournal-demo\n  statejournal verify ./statejournal-demo && echo sound\n\nExit codes: 0 ok, 1 error, 2 usage, 3 verify found repairable damage (torn tail), 4 verify found corruption."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a write-heavy streaming job (clicks per user per 10-second window) with exactly-once
    /// checkpoints; kill it at any moment and run it again: it resumes and checks its result.
    #[command(
        after_help = "Examples:\n  statejournal demo --events 2000000 --checkpoint-every 1\n  (press Ctrl-C or kill -9 it, run it again: it resumes from its last checkpoint)\n  statejournal demo --remote file:///tmp/sj-store          every checkpoint also pushed to a store\n  statejournal demo --dir ./elsewhere --remote file:///tmp/sj-store\n  (an empty --dir starts from the store's newest checkpoint: the job moved to another machine)"
    )]
    Demo(demo::Args),
    /// Show what a journal directory holds: segments, LSNs, snapshots, checkpoints, states, key
    /// groups, bytes, and the estimated recovery time. Read-only.
    #[command(
        after_help = "Example:\n  statejournal inspect ./statejournal-demo\n  statejournal inspect --json ./statejournal-demo | jq .states\n\nExits 0 whenever it could read the directory, damaged or not (it lists the damage);\n`statejournal verify` gives the verdict."
    )]
    Inspect(look::InspectArgs),
    /// Read every byte and check every checksum; exit 0 only when all is sound. On damage, name
    /// file and offset and what each recovery mode would do. Read-only.
    #[command(
        after_help = "Example:\n  statejournal verify ./statejournal-demo; echo \"exit $?\"\n\nExit codes: 0 sound, 1 error (not a journal, unreadable), 3 damage the default open repairs\nwithout losing an acknowledged record (torn tail, debris, a bad snapshot it falls back past),\n4 damaged durable data or broken structure."
    )]
    Verify(look::VerifyArgs),
    /// Print log records (and with --snapshot, snapshot entries) as JSON lines, values decoded
    /// where the encoding allows, hex otherwise. Read-only.
    #[command(
        after_help = "Example:\n  statejournal dump ./statejournal-demo --state clicks --from 1000 | head\n  statejournal dump ./statejournal-demo --snapshot --state results"
    )]
    Dump(dump::Args),
    /// Cut a torn tail (showing what it drops and keeping a backup of the cut bytes); refuses
    /// corruption of durable data unless --point-in-time is given.
    #[command(
        after_help = "Example:\n  statejournal repair ./statejournal-demo --dry-run\n  statejournal repair ./statejournal-demo\n  statejournal repair ./statejournal-demo --point-in-time   # stop before damaged durable data"
    )]
    Repair(repair::RepairArgs),
    /// Compact the log into a new snapshot now (the journal must not be open elsewhere).
    #[command(after_help = "Example:\n  statejournal compact ./statejournal-demo")]
    Compact(repair::CompactArgs),
    /// Checkpoint operations.
    #[command(subcommand)]
    Checkpoint(CheckpointCommand),
    /// Sizing before a job exists: disk, checkpoint size, recovery time, from measured constants.
    #[command(
        after_help = "Example:\n  statejournal plan --keys 1000 --value-bytes 1048576 --updates-per-sec 100\n  statejournal plan --keys 10000000 --value-bytes 100 --updates-per-sec 1000000 --json"
    )]
    Plan(plan::Args),
}

/// How the remote subcommands name a store and find its credentials (their `--help`).
const STORES: &str = "Stores (URL):\n  s3://BUCKET/PREFIX        Amazon S3 or any S3 API (MinIO, moto, R2 ...)\n  file:///ABSOLUTE/PATH     a directory, e.g. a shared file system\n  memory:///PREFIX          this process's memory (gone when it exits: for tests)\n\nS3 settings come from the environment, as object_store's AmazonS3Builder::from_env reads them:\nAWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION (or AWS_DEFAULT_REGION),\nAWS_ENDPOINT_URL (or AWS_ENDPOINT) for a server other than AWS, AWS_ALLOW_HTTP=true for a plain\nhttp:// endpoint, and the other AWS_* names object_store knows (unknown ones are ignored).\nWithout credentials in the environment the client asks the instance metadata service.";

fn push_help() -> String {
    format!(
        "Examples:\n  statejournal checkpoint push ./statejournal-demo s3://backups/clicks\n  statejournal checkpoint push ./statejournal-demo file:///mnt/ckpt/clicks --checkpoint 7\n  AWS_ENDPOINT_URL=http://127.0.0.1:9000 AWS_ALLOW_HTTP=true AWS_ACCESS_KEY_ID=... \\\n    AWS_SECRET_ACCESS_KEY=... AWS_REGION=us-east-1 statejournal checkpoint push ./job s3://bucket/job\n\n\
         The checkpoint is checked first (every snapshot block, every segment prefix's CRC). The push\n\
         opens the journal, so it needs the directory's lock: if a job has the journal open, it fails\n\
         (push from the job, e.g. `statejournal demo --remote URL`, or stop it first); a torn tail a\n\
         killed job left is cut as the job's own restart would, other damage is refused. It joins the\n\
         store's current writer epoch, fencing nobody off; --new-epoch claims a new one, after which\n\
         older writers' pushes fail. A checkpoint older than the newest one pushed from the same log\n\
         is refused (it would become the newest).\n\n{STORES}"
    )
}

fn pull_help(verb: &str) -> String {
    let what = if verb == "pull" {
        "pull downloads and checks every object (length, CRC-32, XXH3, every segment prefix's CRC) and\n\
         leaves the files, a journal directory, for a job to open at the checkpoint; restore does the\n\
         same and then opens it (the library's recovery rebuilds the whole state) and reports it."
    } else {
        "restore is pull (download and check every object: length, CRC-32, XXH3, every segment\n\
         prefix's CRC) followed by an open at the checkpoint, which rebuilds the whole state from\n\
         the snapshot and the log after it, and reports what it holds."
    };
    format!(
        "Examples:\n  statejournal checkpoint {verb} ./restored s3://backups/clicks                 the newest\n  statejournal checkpoint {verb} ./restored s3://backups/clicks --checkpoint 12\n  statejournal checkpoint {verb} ./part-0 file:///mnt/ckpt/clicks --key-groups 0..64    scale out:\n  statejournal checkpoint {verb} ./part-1 file:///mnt/ckpt/clicks --key-groups 64..128  two journals\n\n\
         {what}\n\
         DIR must be empty or missing; a failed {verb} leaves nothing behind in it.\n\
         --checkpoint takes the number `#` of `statejournal checkpoint list --remote URL`.\n\n{STORES}"
    )
}

#[derive(Subcommand)]
enum CheckpointCommand {
    /// List the checkpoints of a journal directory (or, with --remote, of a store), oldest
    /// first. Read-only.
    #[command(after_help = concat!(
        "Examples:\n  statejournal checkpoint list ./statejournal-demo                 local checkpoints, and whether each can be restored\n  statejournal checkpoint list --remote s3://backups/clicks         remote checkpoints: # is what pull/restore --checkpoint take\n  statejournal checkpoint list --remote file:///mnt/ckpt/clicks --json\n\n",
        "Stores (URL): s3://BUCKET/PREFIX, file:///ABSOLUTE/PATH, memory:///PREFIX; S3 settings from the AWS_*\nenvironment variables (see `statejournal checkpoint push --help`)."
    ))]
    List(look::ListArgs),
    /// Push a local checkpoint (default: the newest) of the journal in DIR to the store at URL,
    /// uploading only what the store lacks. Opens the journal: it must not be open elsewhere.
    #[command(after_help = push_help())]
    Push(remote::PushArgs),
    /// Download a remote checkpoint into an empty (or missing) DIR, checking every object's
    /// length and checksums; the files are left for a job to open. `restore` also opens them.
    #[command(after_help = pull_help("pull"))]
    Pull(remote::PullArgs),
    /// `pull`, then open DIR at the checkpoint (rebuilding the state from every snapshot block
    /// and log record) and report what it holds: proof that a job can start from it.
    #[command(after_help = pull_help("restore"))]
    Restore(remote::PullArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(a) => demo::run(a),
        Command::Inspect(a) => look::inspect(a),
        Command::Verify(a) => look::verify(a),
        Command::Dump(a) => dump::run(a),
        Command::Repair(a) => repair::repair(a),
        Command::Compact(a) => repair::compact(a),
        Command::Checkpoint(CheckpointCommand::List(a)) => look::list(a),
        Command::Checkpoint(CheckpointCommand::Push(a)) => remote::push(a),
        Command::Checkpoint(CheckpointCommand::Pull(a)) => remote::pull(a),
        Command::Checkpoint(CheckpointCommand::Restore(a)) => remote::restore(a),
        Command::Plan(a) => plan::run(a),
    };
    match result {
        Ok(code) => code,
        Err(CliError(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// Standard output failed: a closed pipe ends the process quietly, anything else is an error.
pub fn output_failed(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(141);
    }
    eprintln!("error: writing to standard output: {e}");
    std::process::exit(i32::from(EXIT_ERROR));
}

/// A directory argument that must exist and be a directory: one clear sentence otherwise.
pub fn existing_dir(dir: &PathBuf) -> Result<(), CliError> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(CliError(format!("{} is not a directory", dir.display()))),
        Err(e) => Err(CliError(format!("cannot open {}: {e}", dir.display()))),
    }
}
