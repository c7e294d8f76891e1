//! How the CLI prints keys, values and changes: lowercase hex in memory
//! order (as `bpftool map dump` shows bytes), readable lines by default, one
//! JSON object per line with `--json`.

use std::io::Write;

use clap::Args;
use mapsync_client::Event;
use serde_json::json;

/// Where to connect, shared by the client subcommands.
#[derive(Args, Debug, Clone)]
pub struct ClientArgs {
    /// mapsync's address: HOST:PORT or unix:PATH.
    #[arg(long, default_value = crate::commands::serve::DEFAULT_LISTEN, env = "MAPSYNC_ENDPOINT")]
    pub endpoint: String,
    /// One JSON object per line instead of readable text.
    #[arg(long)]
    pub json: bool,
}

/// Lowercase hex without separators.
pub fn hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// Parses a key given on the command line: hex digits, optionally with
/// spaces, a `0x` prefix or `:` separators between bytes.
pub fn parse_hex(arg: &str) -> anyhow::Result<Vec<u8>> {
    let digits: String = arg
        .trim()
        .trim_start_matches("0x")
        .chars()
        .filter(|c| !c.is_whitespace() && *c != ':')
        .collect();
    hex::decode(&digits)
        .map_err(|error| anyhow::anyhow!("`{arg}` is not a hex byte string: {error}"))
}

/// One `list` entry as a JSON line.
pub fn entry_json(key: &[u8], value: &[u8]) -> String {
    json!({"key": hex(key), "value": hex(value)}).to_string()
}

/// One change as a JSON line.
pub fn event_json(event: &Event) -> String {
    json!({
        "revision": event.revision,
        "map": event.map,
        "op": event.op.as_str(),
        "key": hex(&event.key),
        "value": event.value.as_deref().map(hex),
    })
    .to_string()
}

/// One change as a readable line.
pub fn event_text(event: &Event) -> String {
    format!(
        "{:>8}  {:<16} {:<6} {:<7} key {}  value {}",
        event.revision,
        event.map,
        event.op.as_str(),
        event.source,
        hex(&event.key),
        event.value.as_deref().map_or_else(|| "-".to_owned(), hex),
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

    #[test]
    fn keys_parse_from_common_hex_spellings() {
        for arg in ["0a000001", "0x0a000001", "0a 00 00 01", "0A:00:00:01"] {
            assert_eq!(parse_hex(arg).expect(arg), vec![10, 0, 0, 1]);
        }
        assert!(
            parse_hex("0g")
                .unwrap_err()
                .to_string()
                .contains("not a hex byte string")
        );
        assert!(parse_hex("abc").is_err(), "odd number of digits");
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
            prev_value: None,
        };
        assert_eq!(
            event_json(&put),
            r#"{"key":"01000000","map":"flows","op":"put","revision":7,"value":"abcd"}"#
        );
        let delete = Event {
            op: Op::Delete,
            value: None,
            ..put
        };
        assert!(event_json(&delete).contains(r#""value":null"#));
        assert!(event_json(&delete).contains(r#""op":"delete""#));
        assert_eq!(
            entry_json(&[1], &[2, 255]),
            r#"{"key":"01","value":"02ff"}"#
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
            prev_value: None,
        };
        let line = event_text(&delete);
        assert!(
            line.contains("delete") && line.contains("emit") && line.ends_with("value -"),
            "{line}"
        );
    }
}
