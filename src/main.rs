//! The `rlhf` binary: parse the command line, run the command, map errors to a message and a
//! non-zero exit code.

mod cli;

fn main() {
    quiet_mesa_runtime_dir();
    let result = cli::Cli::parse_with_config(std::env::args_os().collect()).and_then(|(cli, matches)| cli::run(cli, &matches));
    if let Err(err) = result {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}

/// Mesa's Vulkan drivers print "error: XDG_RUNTIME_DIR is invalid or not set" when that variable
/// is missing (containers, CI), although compute needs no display. Point it at a private folder
/// before any thread starts, so that a harmless message does not read as a failure.
fn quiet_mesa_runtime_dir() {
    if std::env::var_os("XDG_RUNTIME_DIR").is_some() {
        return;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let user = std::env::var("USER").unwrap_or_else(|_| "user".into());
        let dir = std::env::temp_dir().join(format!("rlhf-runtime-{user}"));
        if std::fs::create_dir_all(&dir).is_ok() && std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).is_ok() {
            // SAFETY (edition 2021: a safe call): no other thread exists yet.
            std::env::set_var("XDG_RUNTIME_DIR", &dir);
        }
    }
}
