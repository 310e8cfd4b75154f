//! `confab-server`: the Confab messenger server.

use confab::config::{normalize_help_flags, ServerArgs};

fn main() {
    // Everything the server and its offline commands create in the storage folder (and
    // the folder itself) is the service user's alone, whatever umask it was started with.
    // SAFETY: umask only sets the process's file-creation mask.
    unsafe { libc::umask(0o077) };
    confab::tune_allocator();
    let args: Vec<String> = normalize_help_flags(std::env::args());
    let strs: Vec<&str> = args.iter().map(String::as_str).collect();
    let cmd = strs.first().copied().unwrap_or("confab-server");
    let parsed =
        match <ServerArgs as argh::FromArgs>::from_args(&[cmd], strs.get(1..).unwrap_or(&[])) {
            Ok(a) => a,
            Err(early) => {
                let ok = early.status.is_ok();
                if ok {
                    println!("{}", early.output);
                    std::process::exit(0);
                }
                eprintln!("{}", early.output);
                std::process::exit(2);
            }
        };
    if parsed.version {
        println!("{}", confab::config::version_line("confab-server"));
        return;
    }
    if let Err(e) = confab::config::check_log_level(&parsed.log_level) {
        eprintln!("confab-server: {e}");
        std::process::exit(2);
    }
    // sled's own lines are off unless asked for: Confab reports storage faults itself, once
    // per change, where sled repeats them every second.
    let level = if parsed.log_level.contains("sled") {
        parsed.log_level.clone()
    } else {
        format!("{},sled=off", parsed.log_level)
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sled=off"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // A closed standard error (the reading end of a pipe gone) must not matter: by
        // default tracing reports a failed write with `eprintln!`, which panics there and
        // took the shutdown task down with it (SIGTERM then never stopped the server).
        .log_internal_errors(false)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let config = match parsed.resolve() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("confab-server: {e}");
            std::process::exit(2);
        }
    };
    if let Some(command) = &parsed.command {
        let dir = config.storage_dir.clone();
        match confab::admin::become_folder_owner(&dir) {
            Ok(Some(uid)) => eprintln!(
                "confab-server: acting as uid {uid}, the owner of {}",
                dir.display()
            ),
            Ok(None) => {}
            Err(e) => {
                eprintln!("confab-server: {e}");
                std::process::exit(1);
            }
        }
        match confab::admin::run(
            &dir,
            command,
            config.cache_bytes,
            config.encryption_key_file.as_deref(),
        ) {
            Ok(line) => {
                println!("{line}");
                return;
            }
            Err(confab::admin::AdminError::Problems(summary)) => {
                println!("{summary}");
                std::process::exit(1);
            }
            Err(e) => {
                let name = match command {
                    confab::admin::ServerCommand::Admin(_) => "admin",
                    confab::admin::ServerCommand::Check(_) => "check",
                };
                eprintln!("confab-server {name}: {e}");
                std::process::exit(1);
            }
        }
    }
    let fds = confab::raise_fd_limit();
    tracing::debug!("open-file limit {fds}");
    let system = actix_rt::System::new();
    match system.block_on(confab::server::run(config)) {
        Ok(()) => {}
        Err(e) => {
            eprintln!("confab-server: {e}");
            std::process::exit(1);
        }
    }
}
