//! `serve --print-config`: the effective configuration as a config file.

use std::any::TypeId;

use clap::{ArgAction, ArgMatches, Command};

use super::NOT_IN_FILE;

/// The effective configuration (file, environment, command line and
/// defaults) as a TOML config file; unset flags are commented out.
pub fn effective_toml(cmd: &Command, matches: &ArgMatches) -> String {
    let mut out = String::from("# mapsync serve: effective configuration\n");
    for arg in cmd.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if NOT_IN_FILE.contains(&long) {
            continue;
        }
        let key = long.replace('-', "_");
        let id = arg.get_id().as_str();
        if matches!(arg.get_action(), ArgAction::SetTrue) {
            out.push_str(&format!("{key} = {}\n", matches.get_flag(id)));
            continue;
        }
        let parser = arg.get_value_parser();
        let numeric = [
            TypeId::of::<u8>(),
            TypeId::of::<u16>(),
            TypeId::of::<u32>(),
            TypeId::of::<u64>(),
            TypeId::of::<usize>(),
            TypeId::of::<i64>(),
            TypeId::of::<f64>(),
        ]
        .into_iter()
        .any(|id| parser.type_id() == id);
        let literal = |raw: &std::ffi::OsStr| {
            let raw = raw.to_string_lossy();
            // only what reads back the same (not the octal `0660`)
            let is_number = raw.parse::<i64>().is_ok_and(|n| n.to_string() == raw)
                || raw
                    .parse::<f64>()
                    .is_ok_and(|n| n.is_finite() && n.to_string() == raw);
            if numeric && is_number {
                raw.into_owned()
            } else {
                toml_string(&raw)
            }
        };
        let values: Vec<String> = matches
            .get_raw(id)
            .map(|raw| raw.map(literal).collect())
            .unwrap_or_default();
        match (arg.get_action(), values.as_slice()) {
            (ArgAction::Append, values) => {
                out.push_str(&format!("{key} = [{}]\n", values.join(", ")))
            }
            (_, []) => out.push_str(&format!("# {key} =\n")),
            (_, [value, ..]) => out.push_str(&format!("{key} = {value}\n")),
        }
    }
    out
}

/// `text` as a TOML basic string.
fn toml_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
