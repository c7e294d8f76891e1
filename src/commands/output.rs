//! How the CLI prints keys, values and changes: readable lines by default,
//! one JSON object per line with `--json`. Keys and values are lowercase hex
//! in memory order (as `bpftool map dump` shows bytes) or decoded JSON, as
//! [`format`](super::format) renders them.

use std::future::Future;
use std::io::Write;
use std::time::Duration;

use clap::Args;
use mapsync_client::{Client, ConnectOptions, Event};
use serde_json::{Value, json};

use super::format::{self, FormatArgs, Renderer, Shown};
// where `get` and the write commands have always found them
pub use super::format::{hex, parse_hex};

/// Where to connect, shared by the client subcommands.
#[derive(Args, Debug, Clone)]
pub struct ClientArgs {
    /// mapsync's address: HOST:PORT or unix:PATH.
    #[arg(long, default_value = crate::commands::serve::DEFAULT_LISTEN, env = "MAPSYNC_ENDPOINT")]
    pub endpoint: String,
    /// One JSON object per line instead of readable text.
    #[arg(long)]
    pub json: bool,
    /// Seconds the command may take, from connecting to the last answer
    /// (for `watch`: until the watch is running; then it has no limit); 0:
    /// no limit.
    #[arg(long, value_name = "SECS", default_value_t = 10.0, value_parser = parse_timeout)]
    pub timeout: f64,
    #[command(flatten)]
    pub show: FormatArgs,
    #[command(flatten)]
    pub tls: super::connection_args::ClientTlsArgs,
}

fn parse_timeout(arg: &str) -> Result<f64, String> {
    match arg.parse::<f64>() {
        Ok(secs) if secs >= 0.0 && secs.is_finite() => Ok(secs),
        _ => Err(format!("`{arg}` is not a number of seconds (0: no limit)")),
    }
}

impl ClientArgs {
    /// The `--timeout`, if any.
    pub fn deadline(&self) -> Option<Duration> {
        (self.timeout > 0.0).then(|| Duration::from_secs_f64(self.timeout))
    }

    /// Connects to `--endpoint`, pinging the server every `keepalive`
    /// (`None`: never) to notice when it is gone.
    pub async fn connect(&self, keepalive: Option<Duration>) -> anyhow::Result<Client> {
        let options = ConnectOptions {
            connect_timeout: self.deadline(),
            keepalive_interval: keepalive,
            keepalive_timeout: keepalive.unwrap_or(Duration::from_secs(10)),
            tls: self.tls.options()?,
            token: self.tls.token()?,
        };
        Ok(Client::connect_with(&self.endpoint, &options).await?)
    }

    /// Connects as [`Self::connect`] does and learns the shapes of `maps`
    /// (empty: every map) for `--format` and `--per-cpu`, checking the flags
    /// fit them.
    pub async fn connect_rendering(
        &self,
        keepalive: Option<Duration>,
        maps: &[String],
    ) -> anyhow::Result<(Client, Renderer)> {
        let mut client = self.connect(keepalive).await?;
        let renderer = Renderer::new(&mut client, self.show.clone(), maps).await?;
        Ok((client, renderer))
    }

    /// Runs `work` within `--timeout`; past it, the error says that the
    /// server did not answer in time.
    pub async fn within<T>(
        &self,
        work: impl Future<Output = anyhow::Result<T>>,
    ) -> anyhow::Result<T> {
        let Some(deadline) = self.deadline() else {
            return work.await;
        };
        match tokio::time::timeout(deadline, work).await {
            Ok(result) => result,
            Err(_) => anyhow::bail!(
                "no answer from mapsync at {} within {} s (--timeout); is the server stopped or overloaded?",
                self.endpoint,
                self.timeout
            ),
        }
    }
}

/// A rendered key and value as JSON object fields (`key`, and `value` or
/// `values`), with `extra` fields.
pub fn fields(key: Value, value: Option<Shown>, extra: Value) -> Value {
    let mut object = match extra {
        Value::Object(object) => object,
        _ => serde_json::Map::new(),
    };
    object.insert("key".into(), key);
    match value {
        Some(shown) => object.insert(shown.field.into(), shown.value),
        None => object.insert("value".into(), Value::Null),
    };
    Value::Object(object)
}

/// One `list` entry as a JSON line.
pub fn entry_json(key: Value, value: Shown) -> String {
    fields(key, Some(value), json!({})).to_string()
}

/// One `list` entry as a readable line.
pub fn entry_text(key: &Value, value: &Shown) -> String {
    format!(
        "key {}  {} {}",
        format::text(key),
        value.field,
        format::value_text(value)
    )
}

/// One change as a JSON line (`value` is `None` on delete).
pub fn event_json(event: &Event, key: Value, value: Option<Shown>) -> String {
    fields(
        key,
        value,
        json!({"revision": event.revision, "map": event.map, "op": event.op.as_str()}),
    )
    .to_string()
}

/// One change as a readable line.
pub fn event_text(event: &Event, key: &Value, value: Option<&Shown>) -> String {
    format!(
        "{:>8}  {:<16} {:<6} {:<7} key {}  {} {}",
        event.revision,
        event.map,
        event.op.as_str(),
        event.source,
        format::text(key),
        value.map_or("value", |v| v.field),
        value.map_or_else(|| "-".to_owned(), format::value_text),
    )
}

/// Writes a line and flushes, so that piped output is live.
pub fn emit(out: &mut impl Write, line: &str) -> anyhow::Result<()> {
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use mapsync_client::Op;

    fn hex_value(bytes: &[u8]) -> Shown {
        Shown {
            field: "value",
            value: Value::String(hex(bytes)),
        }
    }

    fn event_json_hex(event: &Event) -> String {
        event_json(
            event,
            Value::String(hex(&event.key)),
            event.value.as_deref().map(hex_value),
        )
    }

    #[test]
    fn json_lines_have_the_documented_shape() {
        let put = Event {
            revision: 7,
            map: "flows".into(),
            op: Op::Put,
            key: Bytes::from_static(&[1, 0, 0, 0]),
            value: Some(Bytes::from_static(&[0xab, 0xcd])),
            source: "trace",
            key_json: None,
            value_json: None,
            prev_value: None,
        };
        assert_eq!(
            event_json_hex(&put),
            r#"{"revision":7,"map":"flows","op":"put","key":"01000000","value":"abcd"}"#,
            "the order README.md documents"
        );
        let delete = Event {
            op: Op::Delete,
            value: None,
            ..put
        };
        assert!(event_json_hex(&delete).contains(r#""value":null"#));
        assert!(event_json_hex(&delete).contains(r#""op":"delete""#));
        assert_eq!(
            entry_json(json!("01"), hex_value(&[2, 255])),
            r#"{"key":"01","value":"02ff"}"#
        );
        let per_cpu = Shown {
            field: "values",
            value: json!([{"cpu": 0, "value": 1}]),
        };
        assert_eq!(
            entry_json(json!({"port": 80}), per_cpu.clone()),
            r#"{"key":{"port":80},"values":[{"cpu":0,"value":1}]}"#
        );
        assert_eq!(
            entry_text(&json!({"port": 80}), &per_cpu),
            r#"key {"port":80}  values cpu0 1"#
        );
    }

    #[test]
    fn readable_lines_show_source_and_a_dash_for_deletes() {
        let delete = Event {
            revision: 3,
            map: "m".into(),
            op: Op::Delete,
            key: Bytes::from_static(&[9]),
            value: None,
            source: "emit",
            key_json: None,
            value_json: None,
            prev_value: None,
        };
        let line = event_text(&delete, &json!("09"), None);
        assert!(
            line.contains("delete") && line.contains("emit") && line.ends_with("value -"),
            "{line}"
        );
    }
}
