//! `confab-server`: the Confab messenger server.

use confab::config::{normalize_help_flags, ServerArgs};

fn main() {
    // Everything the server and its offline commands create in the storage folder (and
    // the folder itself) is the service user's alone, whatever umask it was started with.
    // SAFETY: umask only sets the process's file-creation mask.
    unsafe { libc::umask(0o077) };
    confab::tune_allocator();
    let mut args: Vec<String> = normalize_help_flags(std::env::args());
    let cmd = if args.is_empty() {
        "confab-server".to_string()
    } else {
        args.remove(0)
    };
    // `--config FILE` and CONFAB_<OPTION> variables, under the command line.
    let env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("CONFAB_"))
        .collect();
    let args = match confab::config_file::merge(&args, &env) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("confab-server: {e}");
            std::process::exit(2);
        }
    };
    let strs: Vec<&str> = args.iter().map(String::as_str).collect();
    let parsed = match <ServerArgs as argh::FromArgs>::from_args(&[cmd.as_str()], &strs) {
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
    let logged = parsed
        .log_format
        .parse::<confab::logging::LogFormat>()
        .and_then(|format| {
            confab::logging::init(&parsed.log_level, format, parsed.log_file.as_deref())
        });
    if let Err(e) = logged {
        eprintln!("confab-server: {e}");
        std::process::exit(2);
    }
    let config = match parsed.resolve() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("confab-server: {e}");
            std::process::exit(2);
        }
    };
    if let Some(confab::admin::ServerCommand::Healthcheck(h)) = &parsed.command {
        let timeout = std::time::Duration::from_secs(h.timeout.max(1));
        match confab::probe::check_ready(config.listen, timeout) {
            Ok(()) => {
                println!("ready");
                return;
            }
            Err(e) => {
                eprintln!("confab-server healthcheck: {e}");
                std::process::exit(1);
            }
        }
    }
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
                if !line.is_empty() {
                    println!("{line}");
                }
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
                    confab::admin::ServerCommand::Healthcheck(_) => "healthcheck",
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
