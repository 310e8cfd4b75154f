//! Settings from a TOML file (`--config FILE`, or `CONFAB_CONFIG`) and from `CONFAB_<OPTION>`
//! environment variables, merged under the command line: a flag given on the command line
//! wins over the same option in the environment, which wins over the file.
//!
//! Keys are the flags' names without the dashes (`storage-dir`, or `storage_dir`;
//! `CONFAB_STORAGE_DIR`). The server's flags and their kinds are read off argh's usage line
//! of [`ServerArgs`], so the struct stays the one place an option is declared. The merged
//! result is plain arguments, parsed and checked by argh and `ServerArgs::resolve` like
//! typed ones (so contradictions between sources are refused naming both flags).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::config::ServerArgs;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `--use-ssl`: present or not.
    Switch,
    /// `--listen <listen>`: one value.
    Value,
    /// `--trusted-proxy <trusted-proxy...>`: any number of values.
    Repeated,
}

/// Options that only the command line may give.
const COMMAND_LINE_ONLY: [&str; 2] = ["config", "version"];

/// The server's options by name (without dashes), from argh's usage line.
fn options() -> BTreeMap<String, Kind> {
    let usage = match <ServerArgs as argh::FromArgs>::from_args(&["confab-server"], &["--help"]) {
        Err(early) => early.output,
        Ok(_) => String::new(),
    };
    let first = usage.lines().next().unwrap_or("");
    let mut out = BTreeMap::new();
    for part in first.split('[').skip(1) {
        let part = part.split(']').next().unwrap_or("");
        let Some(rest) = part.strip_prefix("--") else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let Some(name) = words.next() else { continue };
        let kind = match words.next() {
            None => Kind::Switch,
            Some(v) if v.ends_with("...>") => Kind::Repeated,
            Some(_) => Kind::Value,
        };
        out.insert(name.to_string(), kind);
    }
    out
}

/// `storage_dir`, `STORAGE_DIR`, `storage-dir` → `storage-dir`.
fn normalize(key: &str) -> String {
    key.trim().to_ascii_lowercase().replace('_', "-")
}

fn truth(source: &str, value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        other => Err(format!("{source}: '{other}' is not true or false")),
    }
}

/// One source's options as arguments, by option name.
type Given = BTreeMap<String, Vec<String>>;

fn arguments(name: &str, kind: Kind, values: Vec<String>, on: bool) -> Vec<String> {
    let flag = format!("--{name}");
    match kind {
        Kind::Switch if on => vec![flag],
        Kind::Switch => Vec::new(),
        Kind::Value | Kind::Repeated => {
            values.into_iter().flat_map(|v| [flag.clone(), v]).collect()
        }
    }
}

fn from_file(path: &Path, known: &BTreeMap<String, Kind>) -> Result<Given, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("--config: cannot read {}: {e}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut given = Given::new();
    for (key, value) in table {
        let name = normalize(&key);
        let kind = match known.get(&name) {
            Some(k) if !COMMAND_LINE_ONLY.contains(&name.as_str()) => *k,
            _ => {
                return Err(format!(
                    "{}: unknown option '{key}' (the options are confab-server's flags without the dashes; see confab-server --help)",
                    path.display()
                ))
            }
        };
        let scalar = |v: &toml::Value| match v {
            toml::Value::String(s) => Ok(s.clone()),
            toml::Value::Integer(i) => Ok(i.to_string()),
            other => Err(format!(
                "{}: '{key}' must be a string or a whole number, not {}",
                path.display(),
                other.type_str()
            )),
        };
        let args = match (kind, &value) {
            (Kind::Switch, toml::Value::Boolean(on)) => arguments(&name, kind, Vec::new(), *on),
            (Kind::Switch, other) => {
                return Err(format!(
                    "{}: '{key}' is true or false, not {}",
                    path.display(),
                    other.type_str()
                ))
            }
            (Kind::Repeated, toml::Value::Array(items)) => {
                let values = items.iter().map(scalar).collect::<Result<Vec<_>, _>>()?;
                arguments(&name, kind, values, true)
            }
            (Kind::Repeated | Kind::Value, v) => arguments(&name, kind, vec![scalar(v)?], true),
        };
        given.insert(name, args);
    }
    Ok(given)
}

fn from_env(env: &[(String, String)], known: &BTreeMap<String, Kind>) -> Result<Given, String> {
    let mut given = Given::new();
    for (var, value) in env {
        let Some(key) = var.strip_prefix("CONFAB_") else {
            continue;
        };
        let name = normalize(key);
        // Other CONFAB_ variables (the client's CONFAB_SERVER, CONFAB_PASSWORD…) are not
        // the server's.
        let Some(&kind) = known.get(&name) else {
            continue;
        };
        if COMMAND_LINE_ONLY.contains(&name.as_str()) {
            continue;
        }
        let args = match kind {
            Kind::Switch => arguments(&name, kind, Vec::new(), truth(var, value)?),
            Kind::Value => arguments(&name, kind, vec![value.clone()], true),
            Kind::Repeated => {
                let values = value
                    .split(',')
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .map(str::to_string)
                    .collect();
                arguments(&name, kind, values, true)
            }
        };
        given.insert(name, args);
    }
    Ok(given)
}

/// The options the command line gives, before any subcommand.
fn on_command_line(cli: &[String]) -> BTreeSet<String> {
    cli.iter()
        .take_while(|a| a.starts_with("--") || !matches!(a.as_str(), "admin" | "check"))
        .filter_map(|a| a.strip_prefix("--"))
        .map(str::to_string)
        .collect()
}

/// The file named by `--config` on the command line, or else by `CONFAB_CONFIG`.
fn config_path(cli: &[String], env: &[(String, String)]) -> Option<std::path::PathBuf> {
    let mut args = cli.iter();
    while let Some(a) = args.next() {
        if a == "--config" {
            return args.next().map(std::path::PathBuf::from);
        }
    }
    env.iter()
        .find(|(k, _)| k == "CONFAB_CONFIG")
        .map(|(_, v)| std::path::PathBuf::from(v))
}

/// The arguments to parse: what the file and the environment give that the command line
/// does not, then the command line itself (`cli`: without the program name).
pub fn merge(cli: &[String], env: &[(String, String)]) -> Result<Vec<String>, String> {
    let known = options();
    let mut taken = on_command_line(cli);
    let mut out = Vec::new();
    let env_given = from_env(env, &known)?;
    let file_given = match config_path(cli, env) {
        Some(path) => from_file(&path, &known)?,
        None => Given::new(),
    };
    for (name, args) in env_given {
        if taken.insert(name) {
            out.extend(args);
        }
    }
    for (name, args) in file_given {
        if taken.insert(name) {
            out.extend(args);
        }
    }
    out.extend(cli.iter().cloned());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn the_options_are_read_off_the_usage_line() {
        let o = options();
        assert_eq!(o.get("listen"), Some(&Kind::Value));
        assert_eq!(o.get("use-ssl"), Some(&Kind::Switch));
        assert_eq!(o.get("trusted-proxy"), Some(&Kind::Repeated));
        assert_eq!(o.get("config"), Some(&Kind::Value));
    }

    #[test]
    fn the_command_line_wins_over_the_environment() {
        let env = vec![
            ("CONFAB_LISTEN".to_string(), "127.0.0.1:1".to_string()),
            ("CONFAB_WEB_ROOT".to_string(), "/srv".to_string()),
            (
                "CONFAB_TRUSTED_PROXY".to_string(),
                "10.0.0.0/8, fd00::/8".to_string(),
            ),
            ("CONFAB_REQUIRE_MFA".to_string(), "yes".to_string()),
            ("CONFAB_PASSWORD".to_string(), "the client's".to_string()),
            ("CONFAB_VERSION".to_string(), "1".to_string()),
        ];
        let merged = merge(&s(&["--listen", "127.0.0.1:2", "check"]), &env).unwrap();
        assert_eq!(
            merged,
            s(&[
                "--require-mfa",
                "--trusted-proxy",
                "10.0.0.0/8",
                "--trusted-proxy",
                "fd00::/8",
                "--web-root",
                "/srv",
                "--listen",
                "127.0.0.1:2",
                "check"
            ])
        );
        let bad = vec![("CONFAB_REQUIRE_MFA".to_string(), "maybe".to_string())];
        assert!(merge(&[], &bad).unwrap_err().contains("CONFAB_REQUIRE_MFA"));
    }
}
