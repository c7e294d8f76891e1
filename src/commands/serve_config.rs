//! `serve --config FILE` and `serve --print-config`.
//!
//! The file is TOML whose keys are the long names of `serve`'s flags with
//! underscores for dashes (`listen`, `metrics_listen`, `ringbuf_bytes`, ...).
//! Maps may be `[[map]]` tables and etcd follows `[[follow]]` tables. Each key
//! is turned into the flag it names and the flags are parsed by clap *before*
//! the real command line, so every flag (also ones added later) works in the
//! file with clap's own type and value checks, and the command line wins:
//! a single-valued flag given there replaces the file's value, a repeatable
//! one (`--map`, `--poll`, ...) adds to the file's list. A variable in the
//! environment (`MAPSYNC_LISTEN`, ...) also wins over the file.

use std::any::TypeId;
use std::ffi::OsString;
use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{ArgAction, ArgMatches, Args, Command, FromArgMatches};
use toml_edit::{Document, Item, Table, Value};

use super::serve::ServeArgs;

/// Flags that make no sense inside the file.
const NOT_IN_FILE: [&str; 4] = ["config", "print-config", "help", "version"];

/// The `serve` command as clap sees it, with later flags replacing earlier
/// ones (the file's flags come first).
fn serve_command() -> Command {
    ServeArgs::augment_args(Command::new("serve")).args_override_self(true)
}

/// Applies `--config` (and answers `--print-config`) for arguments parsed
/// from the process's command line. `None`: the config was printed, exit.
pub fn resolve(args: ServeArgs) -> anyhow::Result<Option<ServeArgs>> {
    if args.config.is_none() && !args.print_config {
        return Ok(Some(args));
    }
    // the arguments after the `serve` subcommand
    let argv: Vec<OsString> = std::env::args_os()
        .skip(1)
        .skip_while(|arg| arg != "serve")
        .skip(1)
        .collect();
    let (args, matches) = resolve_from(args.config.as_deref(), &argv)?;
    if args.print_config {
        use std::io::Write;
        std::io::stdout()
            .lock()
            .write_all(effective_toml(&serve_command(), &matches).as_bytes())
            .context("cannot write the config to stdout")?;
        return Ok(None);
    }
    Ok(Some(args))
}

/// The arguments of `serve` with the file at `config` (if any) read first
/// and `argv` (the command line after `serve`) over it.
pub fn resolve_from(
    config: Option<&Path>,
    argv: &[OsString],
) -> anyhow::Result<(ServeArgs, ArgMatches)> {
    let cmd = serve_command();
    let mut all: Vec<OsString> = vec!["serve".into()];
    if let Some(path) = config {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        all.extend(
            file_args(&cmd, &text)
                .map_err(|error| anyhow::anyhow!("config file {}: {error:#}", path.display()))?,
        );
    }
    all.extend(argv.iter().cloned());
    let matches = cmd
        .try_get_matches_from(all)
        .map_err(|error| match config {
            // the file's keys are flags too: say that they were read
            Some(path) => anyhow::anyhow!(
                "{} (flags and config file {})",
                clap_one_line(&error),
                path.display()
            ),
            None => anyhow::anyhow!("{}", clap_one_line(&error)),
        })?;
    let args = ServeArgs::from_arg_matches(&matches)
        .map_err(|error| anyhow::anyhow!("{}", clap_one_line(&error)))?;
    Ok((args, matches))
}

/// The flags a config file's text stands for, each value checked by its
/// flag's parser. Errors name the line and the key.
pub fn file_args(cmd: &Command, text: &str) -> anyhow::Result<Vec<OsString>> {
    let doc = Document::parse(text.to_owned()).map_err(|error| {
        let line = error.span().map(|span| line_of(text, &span));
        let message = error.message().trim().replace('\n', " ");
        match line {
            Some(line) => anyhow::anyhow!("line {line}: not TOML: {message}"),
            None => anyhow::anyhow!("not TOML: {message}"),
        }
    })?;
    let at = |span: Option<Range<usize>>| span.map_or(0, |span| line_of(text, &span));
    let mut out = Vec::new();
    for (key, item) in doc.as_table().iter() {
        let key_span = doc.as_table().key(key).and_then(|k| k.span());
        let line = at(key_span);
        match (key, item) {
            ("map", Item::ArrayOfTables(tables)) => {
                for table in tables.iter() {
                    out.extend(map_table(cmd, table, text)?);
                }
            }
            ("follow", Item::ArrayOfTables(tables)) => {
                for table in tables.iter() {
                    out.extend(follow_table(cmd, table, text)?);
                }
            }
            (_, Item::Value(value)) => out.extend(
                flag_args(cmd, key, value).with_context(|| format!("line {line}: `{key}`"))?,
            ),
            _ => anyhow::bail!(
                "line {line}: `{key}` is a table; only [[map]] and [[follow]] tables are known"
            ),
        }
    }
    Ok(out)
}

/// The 1-based line that `span` starts on.
fn line_of(text: &str, span: &Range<usize>) -> usize {
    text[..span.start.min(text.len())].matches('\n').count() + 1
}

/// The flags for one top-level `key = value`.
fn flag_args(cmd: &Command, key: &str, value: &Value) -> anyhow::Result<Vec<OsString>> {
    let long = key.replace('_', "-");
    if key.contains('-') {
        anyhow::bail!(
            "unknown key (keys use underscores: `{}`)",
            key.replace('-', "_")
        );
    }
    let arg = cmd
        .get_arguments()
        .find(|arg| arg.get_long() == Some(long.as_str()) && !NOT_IN_FILE.contains(&long.as_str()));
    let Some(arg) = arg else {
        anyhow::bail!(
            "unknown key (keys are serve's flags, e.g. `metrics_listen` for --metrics-listen)"
        );
    };
    // the environment wins over the file, as the command line does
    if let Some(env) = arg.get_env()
        && std::env::var_os(env).is_some()
    {
        return Ok(Vec::new());
    }
    if matches!(arg.get_action(), ArgAction::SetTrue) {
        return match value {
            Value::Boolean(on) if *on.value() => Ok(vec![format!("--{long}").into()]),
            Value::Boolean(_) => Ok(Vec::new()),
            other => anyhow::bail!("expected true or false, found {}", other.type_name()),
        };
    }
    let values: Vec<&Value> = match value {
        Value::Array(array) if matches!(arg.get_action(), ArgAction::Append) => {
            array.iter().collect()
        }
        Value::Array(_) => anyhow::bail!("takes one value, not a list"),
        value => vec![value],
    };
    let parser = arg.get_value_parser();
    let wants_text = [
        TypeId::of::<String>(),
        TypeId::of::<PathBuf>(),
        TypeId::of::<OsString>(),
    ]
    .into_iter()
    .any(|id| parser.type_id() == id);
    let mut out = Vec::new();
    for value in values {
        let text = match value {
            Value::String(text) => text.value().clone(),
            Value::Integer(number) if !wants_text => number.value().to_string(),
            Value::Float(number) if !wants_text => number.value().to_string(),
            other if wants_text => anyhow::bail!("expected a string, found {}", other.type_name()),
            other => anyhow::bail!("expected a number or a string, found {}", other.type_name()),
        };
        // the flag's own parser: a bad value is refused here, with the line
        let single = Command::new("serve").no_binary_name(true).arg(
            clap::Arg::new("value")
                .allow_hyphen_values(true)
                .value_parser(parser.clone()),
        );
        if let Err(error) = single.try_get_matches_from([&text]) {
            match std::error::Error::source(&error) {
                Some(cause) => anyhow::bail!("invalid value '{text}': {cause}"),
                None => anyhow::bail!("{}", clap_one_line(&error)),
            }
        }
        let flag = format!("--{long}={text}");
        out.push(flag.into());
    }
    Ok(out)
}

/// `[[map]]`: `name`, one of `pin`, `id` or `switch` (with `kind`,
/// `key_size`, `value_size`, `max_entries` to create it), `poll` seconds.
fn map_table(cmd: &Command, table: &Table, text: &str) -> anyhow::Result<Vec<OsString>> {
    let fields = Fields::new(table, text, "[[map]]");
    fields.only(&[
        "name",
        "pin",
        "id",
        "switch",
        "poll",
        "kind",
        "key_size",
        "value_size",
        "max_entries",
    ])?;
    let name = fields.string("name")?;
    let named = |value: String| match &name {
        Some(name) => format!("{name}={value}"),
        None => value,
    };
    let pin = fields.string("pin")?;
    let id = fields.integer("id")?;
    let switch = fields.string("switch")?;
    let shape = [
        fields.string("kind")?,
        fields.integer("key_size")?.map(|n| n.to_string()),
        fields.integer("value_size")?.map(|n| n.to_string()),
        fields.integer("max_entries")?.map(|n| n.to_string()),
    ];
    let mut args: Vec<(&str, String)> = match (pin, id, switch) {
        (Some(pin), None, None) => vec![("map", named(pin))],
        (None, Some(id), None) => vec![("map-id", named(id.to_string()))],
        (None, None, Some(switch)) if shape.iter().all(Option::is_some) => {
            let shape: Vec<String> = shape.iter().flatten().cloned().collect();
            vec![(
                "switch-create",
                named(format!("{switch}:{}", shape.join(":"))),
            )]
        }
        (None, None, Some(_)) if shape.iter().any(Option::is_some) => {
            return Err(fields.error(
                None,
                "to create a switchable map give all of kind, key_size, value_size and max_entries",
            ));
        }
        (None, None, Some(switch)) => vec![("switch", named(switch))],
        _ => return Err(fields.error(None, "give exactly one of pin, id or switch")),
    };
    if shape.iter().any(Option::is_some) && args[0].0 != "switch-create" {
        return Err(fields.error(None, "kind and sizes belong to a `switch` map"));
    }
    if let Some(poll) = fields.number("poll")? {
        let Some(name) = &name else {
            return Err(fields.error(Some("poll"), "a polled map needs a `name`"));
        };
        if !(poll > 0.0 && poll.is_finite()) {
            return Err(fields.error(Some("poll"), "expected seconds > 0"));
        }
        args.push(("poll", format!("{name}={poll}")));
    }
    checked(cmd, args, &fields)
}

/// `[[follow]]`: `map` and `etcd` (`etcd://HOST:PORT[,HOST:PORT]/PREFIX`),
/// optionally `format` (`json` or `raw`: `--follow-format MAP=FORMAT`).
fn follow_table(cmd: &Command, table: &Table, text: &str) -> anyhow::Result<Vec<OsString>> {
    let fields = Fields::new(table, text, "[[follow]]");
    fields.only(&["map", "etcd", "format"])?;
    let (Some(map), Some(etcd)) = (fields.string("map")?, fields.string("etcd")?) else {
        return Err(fields.error(None, "needs `map` and `etcd`"));
    };
    let spec = format!("{map}={etcd}");
    mapsync_fleet::parse_follow(&spec)
        .map_err(|error| fields.error(Some("etcd"), &error.to_string()))?;
    let mut args = vec![("follow", spec)];
    match fields.string("format")?.as_deref() {
        None => {}
        Some(format @ ("json" | "raw")) => args.push(("follow-format", format!("{map}={format}"))),
        Some(_) => return Err(fields.error(Some("format"), "expected \"json\" or \"raw\"")),
    }
    checked(cmd, args, &fields)
}

/// The flags of a table, each checked by its flag's parser.
fn checked(
    cmd: &Command,
    args: Vec<(&str, String)>,
    fields: &Fields,
) -> anyhow::Result<Vec<OsString>> {
    let mut out = Vec::new();
    for (long, value) in args {
        let flag_key = long.replace('-', "_");
        out.extend(
            flag_args(cmd, &flag_key, &Value::from(value))
                .map_err(|error| fields.error(None, &error.to_string()))?,
        );
    }
    Ok(out)
}

/// One `[[map]]` or `[[follow]]` table's fields, with their lines.
struct Fields<'a> {
    table: &'a Table,
    text: &'a str,
    what: &'static str,
}

impl<'a> Fields<'a> {
    fn new(table: &'a Table, text: &'a str, what: &'static str) -> Self {
        Fields { table, text, what }
    }

    /// An error at `field`'s line (or the table's).
    fn error(&self, field: Option<&str>, why: &str) -> anyhow::Error {
        let span = field
            .and_then(|field| self.table.key(field))
            .and_then(|key| key.span())
            .or_else(|| self.table.span());
        let line = span.map_or(0, |span| line_of(self.text, &span));
        match field {
            Some(field) => anyhow::anyhow!("line {line}: {} `{field}`: {why}", self.what),
            None => anyhow::anyhow!("line {line}: {}: {why}", self.what),
        }
    }

    /// Refuses fields not in `known`.
    fn only(&self, known: &[&str]) -> anyhow::Result<()> {
        for (key, _) in self.table.iter() {
            if !known.contains(&key) {
                return Err(self.error(
                    Some(key),
                    &format!("unknown key (known: {})", known.join(", ")),
                ));
            }
        }
        Ok(())
    }

    fn value(&self, field: &str) -> Option<&Value> {
        self.table.get(field).and_then(Item::as_value)
    }

    fn wrong(&self, field: &str, wants: &str) -> anyhow::Error {
        let found = self
            .table
            .get(field)
            .map_or("a table", |item| item.type_name());
        self.error(Some(field), &format!("expected {wants}, found {found}"))
    }

    fn string(&self, field: &str) -> anyhow::Result<Option<String>> {
        match self.table.get(field) {
            None => Ok(None),
            Some(_) => match self.value(field).and_then(Value::as_str) {
                Some(text) => Ok(Some(text.to_owned())),
                None => Err(self.wrong(field, "a string")),
            },
        }
    }

    fn integer(&self, field: &str) -> anyhow::Result<Option<i64>> {
        match self.table.get(field) {
            None => Ok(None),
            Some(_) => match self.value(field).and_then(Value::as_integer) {
                Some(number) if number >= 0 => Ok(Some(number)),
                Some(_) => Err(self.error(Some(field), "expected a number >= 0")),
                None => Err(self.wrong(field, "an integer")),
            },
        }
    }

    fn number(&self, field: &str) -> anyhow::Result<Option<f64>> {
        match self.value(field) {
            None if self.table.get(field).is_none() => Ok(None),
            Some(Value::Integer(number)) => Ok(Some(*number.value() as f64)),
            Some(Value::Float(number)) => Ok(Some(*number.value())),
            _ => Err(self.wrong(field, "a number of seconds")),
        }
    }
}

/// A clap error on one line, without its usage and help hints.
fn clap_one_line(error: &clap::Error) -> String {
    error
        .to_string()
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with("For more information"))
        .filter(|line| !line.starts_with("Usage:"))
        .map(|line| line.strip_prefix("error: ").unwrap_or(line))
        .collect::<Vec<_>>()
        .join(" ")
}

#[path = "serve_config_print.rs"]
mod print;
pub use print::effective_toml;

#[cfg(test)]
#[path = "serve_config_tests.rs"]
mod tests;
