//! Run configurations: `rlhf <command> --config run.toml` reads flags from a TOML file.
//!
//! Every flag of a command is a key of the file, spelled as on the command line without the
//! dashes (`batch_size` and `batch-size` both work); a switch takes `true` or `false`. The file's
//! keys become command-line arguments placed right after the command's name, so flags given on
//! the command line come later and override them (the command is built with
//! `args_override_self`). An unknown key, a table or an array, or a value of the wrong kind is an
//! error naming the file and the key.
//!
//! After parsing, [`resolved_toml`] renders every flag of the command with the value in force
//! (defaults included) as a TOML file that `--config` accepts again; training commands write it
//! into their output folder as `run.toml`.

use rlhf::error::{Error, Result};
use clap::{ArgAction, ArgMatches, Command};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The name of the flag that reads a configuration file.
pub const CONFIG_FLAG: &str = "config";
pub use rlhf::train::run_dir::RESOLVED_FILE;

/// `args` with the keys of the file named by `--config` (if any) inserted after the subcommand.
/// `cmd` is the whole command-line interface (the binary's `Cli::command()`).
pub fn expand_config_args(cmd: &Command, args: Vec<OsString>) -> Result<Vec<OsString>> {
    let Some(sub_at) = args.iter().skip(1).position(|a| !a.to_string_lossy().starts_with('-')).map(|i| i + 1) else {
        return Ok(args);
    };
    let sub_name = args[sub_at].to_string_lossy().into_owned();
    let Some(sub) = cmd.find_subcommand(&sub_name) else {
        return Ok(args); // clap reports the unknown command
    };
    let Some(path) = config_path(&args[sub_at + 1..])? else {
        return Ok(args);
    };
    let inserted = file_args(sub, &path)?;
    let mut out = Vec::with_capacity(args.len() + inserted.len());
    out.extend(args[..=sub_at].iter().cloned());
    out.extend(inserted);
    out.extend(args[sub_at + 1..].iter().cloned());
    Ok(out)
}

/// The path after `--config` (or in `--config=PATH`) among a command's arguments.
fn config_path(args: &[OsString]) -> Result<Option<PathBuf>> {
    let flag = format!("--{CONFIG_FLAG}");
    let mut found = None;
    let mut i = 0;
    while i < args.len() {
        let a = args[i].to_string_lossy();
        if a == "--" {
            break;
        }
        if a == flag {
            let value = args.get(i + 1).ok_or_else(|| Error::invalid(format!("{flag} needs a file name")))?;
            found = Some(PathBuf::from(value));
            i += 1;
        } else if let Some(v) = a.strip_prefix(&format!("{flag}=")) {
            found = Some(PathBuf::from(v));
        }
        i += 1;
    }
    Ok(found)
}

/// The command-line arguments that the keys of the TOML file at `path` stand for.
fn file_args(sub: &Command, path: &Path) -> Result<Vec<OsString>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| Error::file(path, format!("not valid TOML: {}", e.to_string().trim_end())))?;
    let mut out = Vec::new();
    for (key, value) in &table {
        let long = key.replace('_', "-");
        let arg = sub.get_arguments().find(|a| a.get_long() == Some(long.as_str()) && !is_internal(a.get_id().as_str()));
        let Some(arg) = arg else {
            if long == CONFIG_FLAG {
                return Err(Error::file(path, "a configuration file cannot name another one (`config` key)"));
            }
            return Err(Error::file(path, format!("unknown key `{key}` for `rlhf {}`; its keys are: {}", sub.get_name(), known_keys(sub).join(", "))));
        };
        let bad = |what: &str| Error::file(path, format!("key `{key}`: {what}"));
        let is_switch = matches!(arg.get_action(), ArgAction::SetTrue);
        match value {
            toml::Value::Boolean(b) if is_switch => {
                if *b {
                    out.push(OsString::from(format!("--{long}")));
                }
            }
            _ if is_switch => return Err(bad("this switch takes true or false")),
            toml::Value::Datetime(_) | toml::Value::Array(_) | toml::Value::Table(_) => {
                return Err(bad("expected a string, a number or true/false"));
            }
            scalar => {
                let text = match scalar {
                    toml::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                check_value(arg, &text).map_err(|why| bad(&why))?;
                out.push(OsString::from(format!("--{long}={text}")));
            }
        }
    }
    Ok(out)
}

/// Runs `arg`'s value parser on `text` alone, so that a value of the wrong type in a file is
/// reported with the file and the key rather than as if typed on the command line.
fn check_value(arg: &clap::Arg, text: &str) -> std::result::Result<(), String> {
    let long = arg.get_long().unwrap_or("value");
    let probe = clap::Arg::new("value").long("value").value_name("value").action(ArgAction::Set).allow_negative_numbers(true).value_parser(arg.get_value_parser().clone());
    let cmd = Command::new("rlhf").no_binary_name(true).arg(probe);
    match cmd.try_get_matches_from([format!("--value={text}")]) {
        Ok(_) => Ok(()),
        Err(e) => {
            let msg = e.to_string().replace("'--value <value>'", &format!("--{long}"));
            let lines: Vec<&str> = msg.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with("For more information")).collect();
            Err(lines.join(" ").trim_start_matches("error: ").to_string())
        }
    }
}

/// Arguments that are not configuration: help, version and `--config` itself.
fn is_internal(id: &str) -> bool {
    matches!(id, "help" | "version" | CONFIG_FLAG)
}

fn known_keys(sub: &Command) -> Vec<String> {
    sub.get_arguments().filter(|a| !is_internal(a.get_id().as_str())).filter_map(|a| a.get_long()).map(|l| l.replace('-', "_")).collect()
}

/// Every flag of `sub` with the value in force in `matches` (defaults included) as TOML, keys
/// in snake case; flags without a value (an unset optional path) are left out.
pub fn resolved_toml(sub: &Command, matches: &ArgMatches) -> String {
    let mut text = format!(
        "# rlhf {} — the resolved configuration of this run (defaults included).\n# Run it again with: rlhf {} --config {RESOLVED_FILE}\n",
        sub.get_name(),
        sub.get_name()
    );
    for arg in sub.get_arguments() {
        let id = arg.get_id().as_str();
        let Some(long) = arg.get_long() else { continue };
        // what to do with an existing folder is not part of the run's configuration: running the
        // file again never replaces or continues a run unless the command line says so
        if is_internal(id) || matches!(id, "overwrite" | "resume") {
            continue;
        }
        let Some(raw) = matches.get_raw(id) else { continue };
        let values: Vec<String> = raw.map(|v| v.to_string_lossy().into_owned()).collect();
        let Some(v) = values.last() else { continue };
        let value = if matches!(arg.get_action(), ArgAction::SetTrue) {
            toml::Value::Boolean(v == "true")
        } else if let Ok(i) = v.parse::<i64>() {
            toml::Value::Integer(i)
        } else if let (Ok(f), true) = (v.parse::<f64>(), v.chars().all(|c| c.is_ascii_digit() || "+-.eE".contains(c))) {
            toml::Value::Float(f)
        } else {
            toml::Value::String(v.clone())
        };
        text.push_str(&format!("{} = {value}\n", long.replace('-', "_")));
    }
    text
}

/// Writes [`resolved_toml`] to `<out>/run.toml` (atomically), creating `out`.
pub fn write_resolved(out: &Path, sub: &Command, matches: &ArgMatches) -> Result<()> {
    rlhf::io::fs::create_dir_all(out)?;
    rlhf::io::fs::atomic_write(&out.join(RESOLVED_FILE), resolved_toml(sub, matches).as_bytes())
}

/// Flags that do not change what a run computes: where it writes, how it reports, how it is
/// checkpointed and on which device and threads it runs. Every other flag is a setting that a
/// resumed run must share with the run it continues.
pub const NOT_SETTINGS: &[&str] = &["out", "resume", "overwrite", "save_every", "log_every", "max_bad_steps", "threads", "backend", "zero", "save_dtype"];

/// Flags that name input files or folders: their settings are digests of the contents
/// ([`rlhf::io::fs::digest_input`]), not the paths, so a moved file still resumes and an edited
/// one does not.
pub const INPUT_FLAGS: &[&str] = &["model", "policy", "reference", "reward_model", "value_model", "ref_model", "tokenizer", "data", "prompts", "ptx_data"];

/// Every setting of a training command's run (see [`NOT_SETTINGS`]) with the value in force,
/// defaults included: numbers in one spelling (`1e-4` and `0.0001` agree), inputs as digests.
pub fn run_settings(sub: &Command, matches: &ArgMatches) -> serde_json::Map<String, serde_json::Value> {
    let mut out = serde_json::Map::new();
    for arg in sub.get_arguments() {
        let id = arg.get_id().as_str();
        if is_internal(id) || arg.get_long().is_none() {
            continue;
        }
        let key = id.replace('-', "_");
        if NOT_SETTINGS.contains(&key.as_str()) {
            continue;
        }
        let Some(raw) = matches.get_raw(id) else { continue };
        let Some(v) = raw.map(|v| v.to_string_lossy().into_owned()).last() else { continue };
        let value = if INPUT_FLAGS.contains(&key.as_str()) {
            // an input that cannot be read is reported by the command when it loads it, after
            // the flags are checked; its setting then never reaches a checkpoint
            rlhf::io::fs::digest_input(Path::new(&v)).unwrap_or_else(|_| format!("unreadable {v}"))
        } else if let (Ok(f), true) = (v.parse::<f64>(), v.chars().all(|c| c.is_ascii_digit() || "+-.eE".contains(c))) {
            format!("{f}")
        } else {
            v
        };
        out.insert(key, serde_json::Value::String(value));
    }
    out
}
