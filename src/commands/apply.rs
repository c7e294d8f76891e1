//! `mapsync apply`: a switchable map's whole new set (or puts and deletes
//! on top of the live one), made live in one atomic switch.

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use mapsync_client::{ApplyEntry, ApplyMode, ApplyOptions};
use serde_json::{Value, json};

use super::output;
use super::write_input::{Target, WriteArgs};

/// Sets of more entries than this report their progress on stderr.
const PROGRESS_ABOVE: usize = 10_000;
/// At most one progress line per this.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Arguments of `mapsync apply`.
#[derive(Args, Debug)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub write: WriteArgs,
    /// The switchable map's name.
    pub map: String,
    /// JSON lines, one entry each: `{"key": HEX, "value": HEX}` (per-CPU
    /// maps: also `"values": [{"cpu":N,"value":HEX},...]` as `list --json`
    /// prints them), or with `--format json` typed `{"key": {...}, "value":
    /// {...}}`. `-`: standard input. The whole file is checked before
    /// anything is sent.
    pub file: PathBuf,
    /// The entries are puts and deletes (`"value": null`) on top of the live
    /// set, instead of the whole new set.
    #[arg(long)]
    pub merge: bool,
    /// Switch only if the live version is V (a mismatch names the live one).
    #[arg(long, value_name = "V")]
    pub expect_version: Option<u64>,
}

/// Reads and checks the file, applies it, prints the revision and version.
pub async fn run(args: ApplyArgs) -> anyhow::Result<()> {
    let text = read_input(&args.file)?;
    let client_args = args.write.client();
    let mode = if args.merge {
        ApplyMode::Merge
    } else {
        ApplyMode::Replace
    };
    let applied = client_args
        .within(async {
            let mut client = client_args.connect(None).await?;
            let target = Target::new(&mut client, &args.map, args.write.format).await?;
            if !target.map.switchable {
                bail!(
                    "map `{}` is not switchable, so it cannot be applied atomically (serve it \
                     with --switch; plain maps take put and delete)",
                    args.map
                );
            }
            let entries = parse_lines(&target, &text, mode)?;
            let mut options = ApplyOptions::new().mode(mode);
            if let Some(version) = args.expect_version {
                options = options.expect_version(version);
            }
            if let Some(deadline) = args.write.deadline() {
                options = options.timeout(deadline);
            }
            let total = entries.len();
            let mut last = Instant::now();
            let progress = move |sent: usize, total: usize| {
                if total > PROGRESS_ABOVE && (sent == total || last.elapsed() >= PROGRESS_EVERY) {
                    last = Instant::now();
                    eprintln!("apply: sent {sent} of {total} entries");
                }
            };
            let applied = client
                .apply_with_progress(&args.map, entries, &options, progress)
                .await?;
            Ok((applied, total))
        })
        .await?;
    let (applied, sent) = applied;
    let line = if args.write.json {
        json!({
            "map": args.map,
            "op": "apply",
            "revision": applied.revision,
            "epoch": format!("{:016x}", applied.epoch),
            "version": applied.version,
            "entries": applied.entries,
            "changed": applied.changed,
            "sent": sent,
            "switch_ns": applied.switch.as_nanos() as u64,
        })
        .to_string()
    } else {
        format!(
            "version {} live at revision {} (epoch {:016x}): {} entries, {} changed, switch {:.1} ms",
            applied.version,
            applied.revision,
            applied.epoch,
            applied.entries,
            applied.changed,
            applied.switch.as_secs_f64() * 1e3
        )
    };
    output::emit(&mut std::io::stdout().lock(), &line)
}

fn read_input(file: &PathBuf) -> anyhow::Result<String> {
    let mut text = String::new();
    if file.as_os_str() == "-" {
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read standard input")?;
    } else {
        text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
    }
    Ok(text)
}

/// Every entry of the file, checked and encoded; the first bad line is the
/// error (`line N: ...`). Blank lines are skipped.
pub fn parse_lines(
    target: &Target,
    text: &str,
    mode: ApplyMode,
) -> anyhow::Result<Vec<ApplyEntry>> {
    let mut entries = Vec::new();
    let mut lines_of: HashMap<Vec<u8>, usize> = HashMap::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        let entry = parse_line(target, line, mode).with_context(|| format!("line {number}"))?;
        if let Some(first) = lines_of.insert(entry.key.to_vec(), number) {
            bail!(
                "line {number}: key {} is also on line {first}",
                output::hex(&entry.key)
            );
        }
        entries.push(entry);
    }
    let holds = u64::from(target.map.max_entries);
    if mode == ApplyMode::Replace && entries.len() as u64 > holds {
        bail!(
            "{} entries, but map `{}` holds at most {holds}",
            entries.len(),
            target.map.name
        );
    }
    Ok(entries)
}

fn parse_line(target: &Target, line: &str, mode: ApplyMode) -> anyhow::Result<ApplyEntry> {
    let value: Value = serde_json::from_str(line).map_err(|e| anyhow::anyhow!("not JSON: {e}"))?;
    let Value::Object(object) = value else {
        bail!("expected an object {{\"key\": ..., \"value\": ...}}");
    };
    if let Some(unknown) = object
        .keys()
        .find(|k| !matches!(k.as_str(), "key" | "value" | "values"))
    {
        bail!("unknown field `{unknown}` (an entry has key and value)");
    }
    let key = target.key(object.get("key").context("no \"key\"")?)?;
    let value = match (object.get("value"), object.get("values")) {
        (Some(_), Some(_)) => bail!("both \"value\" and \"values\": give one"),
        (None, None) => bail!("no \"value\" (null deletes, with --merge)"),
        (Some(Value::Null), None) if mode == ApplyMode::Merge => None,
        (Some(Value::Null), None) => {
            bail!(
                "\"value\": null deletes, which only --merge allows (a replace gives the whole set)"
            )
        }
        (Some(value), None) | (None, Some(value)) => Some(target.value(value)?),
    };
    Ok(ApplyEntry {
        key: key.into(),
        value: value.map(Into::into),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mapsync_client::MapDescription;

    fn target(kind: &str, value_size: u32, value_bytes: u32) -> Target {
        Target::hex(MapDescription {
            name: "rules".into(),
            id: 1,
            kind: kind.into(),
            key_size: 4,
            value_size,
            value_bytes,
            max_entries: 3,
            entries: 0,
            has_btf: false,
            kernel_name: "rules".into(),
            switchable: true,
            version: 1,
        })
    }

    fn refusal(text: &str, mode: ApplyMode) -> String {
        format!(
            "{:#}",
            parse_lines(&target("hash", 4, 4), text, mode).expect_err("refused")
        )
    }

    #[test]
    fn hex_lines_become_entries_in_order() {
        let text = "{\"key\":\"01000000\",\"value\":\"0a000000\"}\n\n{\"key\":\"02000000\",\"value\":null}\n";
        let entries = parse_lines(&target("hash", 4, 4), text, ApplyMode::Merge).expect("parses");
        assert_eq!(
            entries,
            vec![
                ApplyEntry::put(vec![1, 0, 0, 0], vec![10, 0, 0, 0]),
                ApplyEntry::delete(vec![2, 0, 0, 0])
            ]
        );
    }

    #[test]
    fn per_cpu_values_take_each_cpu_or_one_for_all() {
        let target = target("percpu_hash", 4, 16);
        let text = "{\"key\":\"01000000\",\"values\":[{\"cpu\":1,\"value\":\"05000000\"}]}\n\
                    {\"key\":\"02000000\",\"value\":\"07000000\"}";
        let entries = parse_lines(&target, text, ApplyMode::Replace).expect("parses");
        assert_eq!(
            entries[0].value.as_deref(),
            Some(&[0u8, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0][..])
        );
        assert_eq!(
            entries[1].value.as_deref(),
            Some(&[7u8, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0][..])
        );
        let error = parse_lines(
            &target,
            "{\"key\":\"01000000\",\"values\":[{\"cpu\":2,\"value\":\"05000000\"}]}",
            ApplyMode::Replace,
        )
        .expect_err("no CPU 2");
        assert_eq!(
            format!("{error:#}"),
            "line 1: values[0].cpu: 2 is not a CPU (0 to 1)"
        );
    }

    #[test]
    fn bad_lines_name_the_line_and_the_cause() {
        let put = |key: &str, value: &str| format!("{{\"key\":\"{key}\",\"value\":\"{value}\"}}");
        let ok = put("01000000", "01000000");
        assert_eq!(
            refusal(
                &format!("{ok}\n{}", put("0100zz00", "00000000")),
                ApplyMode::Replace
            ),
            "line 2: key: `0100zz00` is not a hex byte string: Invalid character 'z' at position 4"
        );
        assert_eq!(
            refusal(&put("010000", "00000000"), ApplyMode::Replace),
            "line 1: key: 3 bytes, but map `rules` has 4-byte keys"
        );
        assert_eq!(
            refusal(&put("01000000", "00"), ApplyMode::Replace),
            "line 1: value: 1 bytes, but map `rules` has 4-byte values"
        );
        assert_eq!(
            refusal("{\"key\":\"01000000\",\"value\":null}", ApplyMode::Replace),
            "line 1: \"value\": null deletes, which only --merge allows (a replace gives the whole set)"
        );
        assert_eq!(
            refusal(&format!("{ok}\n{ok}"), ApplyMode::Replace),
            "line 2: key 01000000 is also on line 1"
        );
        assert_eq!(
            refusal(
                "{\"key\":\"01000000\",\"valeu\":\"01000000\"}",
                ApplyMode::Replace
            ),
            "line 1: unknown field `valeu` (an entry has key and value)"
        );
        assert_eq!(
            refusal(
                "{\"key\":{\"a\":1},\"value\":\"01000000\"}",
                ApplyMode::Replace
            ),
            "line 1: key: expected a hex string, got {\"a\":1} (typed keys need --format json)"
        );
        assert!(refusal("[1", ApplyMode::Replace).starts_with("line 1: not JSON: "));
        let four: String = (1..=4)
            .map(|i| put(&format!("0{i}000000"), "00000000") + "\n")
            .collect();
        assert_eq!(
            refusal(&four, ApplyMode::Replace),
            "4 entries, but map `rules` holds at most 3"
        );
        assert!(parse_lines(&target("hash", 4, 4), &four, ApplyMode::Merge).is_ok());
    }
}
