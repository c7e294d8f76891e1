//! Tests of `serve --config`: every kind of key, flags over the file, and
//! every refusal with its one-line text.

use super::*;

/// Writes `text` to a temporary config file and resolves it under `argv`.
fn resolve_text(text: &str, argv: &[&str]) -> anyhow::Result<(ServeArgs, ArgMatches)> {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("mapsync.toml");
    std::fs::write(&path, text).expect("write config");
    let argv: Vec<OsString> = argv.iter().map(OsString::from).collect();
    resolve_from(Some(&path), &argv)
}

fn refusal(text: &str) -> String {
    let error = resolve_text(text, &[]).expect_err("refused");
    let line = crate::one_line(&error);
    assert!(!line.contains('\n'), "{line}");
    // the file's path is named once, then the cause
    assert_eq!(line.matches("config file").count(), 1, "{line}");
    line.split_once("mapsync.toml: ")
        .expect("path")
        .1
        .to_owned()
}

const FULL: &str = r#"
listen = "127.0.0.1:7000"
metrics_listen = "127.0.0.1:9100"
pin_dir = "/sys/fs/bpf/test-cfg"
ringbuf_bytes = 65536
reconcile_interval = 2.5
log_events = 1000
write_uid = [1000, 1001]
follow_reconcile = 5

[[map]]
name = "flows"
pin = "/sys/fs/bpf/flows"
poll = 0.25

[[map]]
id = 42

[[map]]
name = "rules"
switch = "/sys/fs/bpf/rules"

[[map]]
name = "blocks"
switch = "/sys/fs/bpf/blocks"
kind = "hash"
key_size = 4
value_size = 8
max_entries = 1024

[[follow]]
map = "flows"
etcd = "etcd://127.0.0.1:2379/fleet/flows"
format = "json"
"#;

#[test]
fn every_kind_of_key_reaches_its_flag() {
    let (args, _) = resolve_text(FULL, &[]).expect("valid");
    assert_eq!(args.listen, "127.0.0.1:7000");
    assert_eq!(args.metrics_listen.as_deref(), Some("127.0.0.1:9100"));
    assert_eq!(args.pin_dir, PathBuf::from("/sys/fs/bpf/test-cfg"));
    assert_eq!(args.ringbuf_bytes, 65536);
    assert_eq!(args.reconcile_interval, 2.5);
    assert_eq!(args.log_events, 1000);
    assert_eq!(args.write_policy.write_uids, [1000, 1001]);
    assert_eq!(args.follow.follow_reconcile, 5.0);
    assert_eq!(args.maps, ["flows=/sys/fs/bpf/flows"]);
    assert_eq!(args.map_ids, ["42"]);
    assert_eq!(args.switches, ["rules=/sys/fs/bpf/rules"]);
    assert_eq!(
        args.switch_creates,
        ["blocks=/sys/fs/bpf/blocks:hash:4:8:1024"]
    );
    assert_eq!(args.polls, ["flows=0.25"]);
    assert_eq!(
        args.follow.follows,
        ["flows=etcd://127.0.0.1:2379/fleet/flows"]
    );
    assert_eq!(args.follow.follow_format, ["flows=json"]);
    let config = args.sync_config().expect("a valid sync config");
    assert_eq!(config.maps.len(), 4);
    assert_eq!(
        config.maps[0].poll_interval,
        Some(std::time::Duration::from_millis(250))
    );
}

#[test]
fn booleans_octal_strings_and_plain_lists_work() {
    let (args, _) = resolve_text(
        "map = [\"/sys/fs/bpf/a\", \"b=/sys/fs/bpf/b\"]\ninsecure_listen = true\nsocket_mode = \"0640\"\n",
        &[],
    )
    .expect("valid");
    assert_eq!(args.maps, ["/sys/fs/bpf/a", "b=/sys/fs/bpf/b"]);
    assert!(args.security.insecure_listen);
    assert_eq!(args.security.socket_mode, 0o640);
    let (args, _) = resolve_text("insecure_listen = false\n", &[]).expect("valid");
    assert!(!args.security.insecure_listen);
}

#[test]
fn flags_override_the_file_and_add_to_its_lists() {
    let (args, _) = resolve_text(
        FULL,
        &[
            "--listen",
            "127.0.0.1:7001",
            "--ringbuf-bytes=8192",
            "--map",
            "extra=/sys/fs/bpf/extra",
        ],
    )
    .expect("valid");
    assert_eq!(args.listen, "127.0.0.1:7001");
    assert_eq!(args.ringbuf_bytes, 8192);
    // kept from the file
    assert_eq!(args.metrics_listen.as_deref(), Some("127.0.0.1:9100"));
    assert_eq!(
        args.maps,
        ["flows=/sys/fs/bpf/flows", "extra=/sys/fs/bpf/extra"]
    );
}

#[test]
fn every_refusal_names_the_line_and_the_key() {
    for (text, says) in [
        (
            "listen = \"x\"\nlisten_address = \"y\"\n",
            "line 2: `listen_address`: unknown key",
        ),
        (
            "metrics-listen = \"127.0.0.1:1\"\n",
            "line 1: `metrics-listen`: unknown key (keys use underscores: `metrics_listen`)",
        ),
        (
            "config = \"/etc/other.toml\"\n",
            "line 1: `config`: unknown key",
        ),
        (
            "\n\nlisten = 5\n",
            "line 3: `listen`: expected a string, found integer",
        ),
        (
            "ringbuf_bytes = true\n",
            "line 1: `ringbuf_bytes`: expected a number or a string, found boolean",
        ),
        (
            "ringbuf_bytes = \"lots\"\n",
            "line 1: `ringbuf_bytes`: invalid value 'lots': `lots` is not a number of bytes",
        ),
        (
            "log_events = \"many\"\n",
            "line 1: `log_events`: invalid value 'many': invalid digit found in string",
        ),
        (
            "ringbuf_bytes = 6000\n",
            "line 1: `ringbuf_bytes`: invalid value '6000': 6000 is not a power-of-two multiple of the 4096-byte page size",
        ),
        (
            "log_events = -1\n",
            "line 1: `log_events`: invalid value '-1'",
        ),
        (
            "listen = [\"a\", \"b\"]\n",
            "line 1: `listen`: takes one value, not a list",
        ),
        (
            "insecure_listen = \"yes\"\n",
            "line 1: `insecure_listen`: expected true or false, found string",
        ),
        (
            "[metrics]\nlisten = \"x\"\n",
            "line 1: `metrics` is a table; only [[map]] and [[follow]] tables are known",
        ),
        ("listen = \n", "line 1: not TOML"),
        (
            "\n[[map]]\npin = \"/a\"\nflavour = 1\n",
            "line 4: [[map]] `flavour`: unknown key (known: name, pin, id",
        ),
        (
            "[[map]]\nname = 7\npin = \"/a\"\n",
            "line 2: [[map]] `name`: expected a string, found integer",
        ),
        (
            "[[map]]\nid = \"seven\"\n",
            "line 2: [[map]] `id`: expected an integer, found string",
        ),
        (
            "[[map]]\nname = \"a\"\n",
            "line 1: [[map]]: give exactly one of pin, id or switch",
        ),
        (
            "[[map]]\npin = \"/a\"\nid = 3\n",
            "line 1: [[map]]: give exactly one of pin, id or switch",
        ),
        (
            "[[map]]\npin = \"/a\"\npoll = 1\n",
            "line 3: [[map]] `poll`: a polled map needs a `name`",
        ),
        (
            "[[map]]\nname = \"a\"\npin = \"/a\"\npoll = 0\n",
            "line 4: [[map]] `poll`: expected seconds > 0",
        ),
        (
            "[[map]]\nname = \"a\"\npin = \"/a\"\npoll = \"1s\"\n",
            "line 4: [[map]] `poll`: expected a number of seconds, found string",
        ),
        (
            "[[map]]\nswitch = \"/s\"\nkind = \"hash\"\n",
            "line 1: [[map]]: to create a switchable map give all of kind",
        ),
        (
            "[[map]]\npin = \"/s\"\nkind = \"hash\"\n",
            "line 1: [[map]]: kind and sizes belong to a `switch` map",
        ),
        (
            "[[follow]]\nmap = \"a\"\n",
            "line 1: [[follow]]: needs `map` and `etcd`",
        ),
        (
            "[[follow]]\nmap = \"a\"\netcd = \"http://x/p\"\n",
            "line 3: [[follow]] `etcd`: bad follow spec",
        ),
        (
            "[[follow]]\nmap = \"a\"\netcd = \"etcd://h:1/p\"\nformat = \"yaml\"\n",
            "line 4: [[follow]] `format`: expected \"json\" or \"raw\"",
        ),
    ] {
        let line = refusal(text);
        assert!(
            line.starts_with(says),
            "{text:?}:\n  got  {line}\n  want {says}"
        );
    }
}

#[test]
fn a_missing_file_is_named() {
    let error = resolve_from(Some(Path::new("/nonexistent/mapsync.toml")), &[]).unwrap_err();
    assert_eq!(
        crate::one_line(&error),
        "cannot read config file /nonexistent/mapsync.toml: No such file or directory (os error 2)"
    );
}

#[test]
fn the_printed_config_reads_back_to_the_same_arguments() {
    let (args, matches) = resolve_text(FULL, &["--log-bytes", "12345"]).expect("valid");
    let printed = effective_toml(&serve_command(), &matches);
    assert!(
        printed.contains("listen = \"127.0.0.1:7000\"\n"),
        "{printed}"
    );
    assert!(printed.contains("ringbuf_bytes = 65536\n"), "{printed}");
    assert!(printed.contains("log_bytes = 12345\n"), "{printed}");
    assert!(printed.contains("insecure_listen = false\n"), "{printed}");
    assert!(printed.contains("# tls_cert =\n"), "{printed}");
    assert!(
        printed.contains("map = [\"flows=/sys/fs/bpf/flows\"]\n"),
        "{printed}"
    );
    let (again, _) = resolve_text(&printed, &[]).expect("the printed config is valid");
    assert_eq!(format!("{again:?}"), format!("{args:?}"));
}
