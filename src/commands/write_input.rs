//! What `put`, `delete` and `apply` share: their connection flags, the
//! target map's shape (and BTF, for `--format json`), and keys and values
//! read from hex or from typed JSON.
//!
//! Typed input needs the map's BTF. The wire carries decoded output
//! (`decode = true`) but not the types, so the CLI reads them from the
//! kernel itself: the map by the id `ListMaps` gives, its BTF object by id.
//! That needs the CLI on the server's host and `CAP_SYS_ADMIN` (root), which
//! is where writes come from anyway (only over the Unix socket). The map
//! found by id is checked against the server's description (name, sizes)
//! before its types are used.

use std::os::fd::AsFd;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use mapsync_client::{Client, MapDescription};
use mapsync_core::btf::Btf;
use mapsync_kernel::sys;
use serde_json::Value;

use super::format::{Format, FormatArgs, PerCpu};
use super::output::{self, ClientArgs};
use super::typed_input;

/// `enum bpf_map_type` values of maps of maps.
const BPF_MAP_TYPE_ARRAY_OF_MAPS: u32 = 12;
const BPF_MAP_TYPE_HASH_OF_MAPS: u32 = 13;

/// Where to connect and how keys and values are given, for the write
/// subcommands.
#[derive(Args, Debug, Clone)]
pub struct WriteArgs {
    /// mapsync's address: unix:PATH (writes are refused over TCP).
    #[arg(long, default_value = crate::commands::serve::DEFAULT_LISTEN, env = "MAPSYNC_ENDPOINT")]
    pub endpoint: String,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Seconds the command may take, from connecting to the answer; 0: no
    /// limit.
    #[arg(long, value_name = "SECS", default_value_t = 10.0, value_parser = parse_timeout)]
    pub timeout: f64,
    /// How keys and values are given: hex bytes in memory order, or JSON
    /// encoded with the map's BTF (as `list --format json` shows them; needs
    /// the map's BTF, read from the local kernel as root).
    #[arg(long, value_enum, default_value_t = Format::Hex)]
    pub format: Format,
}

fn parse_timeout(arg: &str) -> Result<f64, String> {
    match arg.parse::<f64>() {
        Ok(secs) if secs >= 0.0 && secs.is_finite() => Ok(secs),
        _ => Err(format!("`{arg}` is not a number of seconds (0: no limit)")),
    }
}

impl WriteArgs {
    /// The same as the read commands' connection flags.
    pub fn client(&self) -> ClientArgs {
        ClientArgs {
            endpoint: self.endpoint.clone(),
            json: self.json,
            timeout: self.timeout,
            show: FormatArgs {
                format: Format::Hex,
                per_cpu: PerCpu::Each,
            },
            // writes go over the Unix socket: no TLS
            tls: Default::default(),
        }
    }

    /// The `--timeout`, for the write call itself.
    pub fn deadline(&self) -> Option<Duration> {
        (self.timeout > 0.0).then(|| Duration::from_secs_f64(self.timeout))
    }
}

/// An epoch as mapsync prints it (16 hex digits; `0x` optional).
pub fn parse_epoch(arg: &str) -> Result<u64, String> {
    match u64::from_str_radix(arg.trim_start_matches("0x"), 16) {
        Ok(epoch) if epoch != 0 => Ok(epoch),
        _ => Err(format!(
            "`{arg}` is not an epoch: expected the 16 hex digits mapsync prints (e.g. 6b6c68d7566fd199)"
        )),
    }
}

/// The BTF key and value types of a map.
#[derive(Debug)]
struct Types {
    btf: Btf,
    key: u32,
    value: u32,
}

/// The map written to: its shape, and its types with `--format json`.
#[derive(Debug)]
pub struct Target {
    /// The server's description.
    pub map: MapDescription,
    format: Format,
    types: Option<Types>,
}

impl Target {
    /// Describes `name` (an unknown map is an error listing the mirrored
    /// ones) and, for `--format json`, loads its BTF.
    pub async fn new(client: &mut Client, name: &str, format: Format) -> anyhow::Result<Self> {
        let maps = client.list_maps().await?;
        let Some(map) = maps.get(name) else {
            let names: Vec<&str> = maps.maps.iter().map(|m| m.name.as_str()).collect();
            bail!("unknown map `{name}` (mirrored: {})", names.join(", "));
        };
        let types = match format {
            Format::Hex => None,
            Format::Json => Some(kernel_types(map)?),
        };
        Ok(Self {
            map: map.clone(),
            format,
            types,
        })
    }

    /// A target for hex input with a known shape (no server asked).
    #[cfg(test)]
    pub fn hex(map: MapDescription) -> Self {
        Self {
            map,
            format: Format::Hex,
            types: None,
        }
    }

    fn slot(&self) -> usize {
        (self.map.value_size as usize).div_ceil(8) * 8
    }

    fn cpus(&self) -> usize {
        (self.map.value_bytes as usize / self.slot().max(1)).max(1)
    }

    /// A key from its text (hex, or typed JSON), checked against the map's
    /// key size.
    pub fn key_arg(&self, arg: &str) -> anyhow::Result<Vec<u8>> {
        match &self.types {
            None => self.key_hex(&output::parse_hex(arg).context("key")?),
            Some(_) => self.key(&json_arg(arg, "key")?),
        }
    }

    /// A value from its text, in syscall layout.
    pub fn value_arg(&self, arg: &str) -> anyhow::Result<Vec<u8>> {
        match &self.types {
            None => self.value_hex(&output::parse_hex(arg).context("value")?),
            Some(_) => self.value(&json_arg(arg, "value")?),
        }
    }

    fn key_hex(&self, bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
        if bytes.len() != self.map.key_size as usize {
            bail!(
                "key: {} bytes, but map `{}` has {}-byte keys",
                bytes.len(),
                self.map.name,
                self.map.key_size
            );
        }
        Ok(bytes.to_vec())
    }

    /// A hex value: the whole syscall layout, or (per-CPU maps) one CPU's
    /// value for every CPU.
    fn value_hex(&self, bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
        let (size, full) = (self.map.value_size as usize, self.map.value_bytes as usize);
        if bytes.len() == full {
            return Ok(bytes.to_vec());
        }
        if self.map.is_per_cpu() && bytes.len() == size {
            return Ok(self.every_cpu(bytes));
        }
        if self.map.is_per_cpu() {
            bail!(
                "value: {} bytes, but map `{}` takes {size} bytes (one value for every CPU) or \
                 {full} (one {}-byte slot per CPU)",
                bytes.len(),
                self.map.name,
                self.slot()
            );
        }
        bail!(
            "value: {} bytes, but map `{}` has {size}-byte values",
            bytes.len(),
            self.map.name
        )
    }

    fn every_cpu(&self, one: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; self.map.value_bytes as usize];
        for slot in out.chunks_mut(self.slot()) {
            slot[..one.len()].copy_from_slice(one);
        }
        out
    }

    /// A key as a file line gives it: a hex string, or typed JSON.
    pub fn key(&self, input: &Value) -> anyhow::Result<Vec<u8>> {
        match (&self.types, input) {
            (None, Value::String(hex)) => self.key_hex(&output::parse_hex(hex).context("key")?),
            (None, other) => {
                bail!("key: expected a hex string, got {other} (typed keys need --format json)")
            }
            (Some(types), input) => Ok(typed_input::encode(&types.btf, types.key, input, "key")?),
        }
    }

    /// A value as a file line gives it (`value`, or `values` per CPU as
    /// `list --json` prints them), in syscall layout.
    pub fn value(&self, input: &Value) -> anyhow::Result<Vec<u8>> {
        if self.map.is_per_cpu()
            && let Value::Array(slots) = input
            && !slots.is_empty()
            && slots.iter().all(|s| s.get("cpu").is_some())
        {
            return self.per_cpu(slots);
        }
        let one = self.one_value(input, "value")?;
        if self.format == Format::Json && self.map.is_per_cpu() {
            return Ok(self.every_cpu(&one));
        }
        Ok(one)
    }

    /// One value (hex: the full layout or one CPU's; typed: one CPU's).
    fn one_value(&self, input: &Value, path: &str) -> anyhow::Result<Vec<u8>> {
        match (&self.types, input) {
            (None, Value::String(hex)) => {
                self.value_hex(&output::parse_hex(hex).with_context(|| path.to_owned())?)
            }
            (None, other) => {
                bail!(
                    "{path}: expected a hex string, got {other} (typed values need --format json)"
                )
            }
            (Some(types), input) => Ok(typed_input::encode(&types.btf, types.value, input, path)?),
        }
    }

    /// `[{"cpu":N,"value":V}]`: CPUs not listed are zero.
    fn per_cpu(&self, slots: &[Value]) -> anyhow::Result<Vec<u8>> {
        let (cpus, slot, size) = (self.cpus(), self.slot(), self.map.value_size as usize);
        let mut out = vec![0u8; self.map.value_bytes as usize];
        let mut seen = vec![false; cpus];
        for (i, entry) in slots.iter().enumerate() {
            let path = format!("values[{i}]");
            let cpu = entry["cpu"]
                .as_u64()
                .and_then(|c| usize::try_from(c).ok())
                .filter(|c| *c < cpus)
                .with_context(|| {
                    format!(
                        "{path}.cpu: {} is not a CPU (0 to {})",
                        entry["cpu"],
                        cpus - 1
                    )
                })?;
            if std::mem::replace(&mut seen[cpu], true) {
                bail!("{path}.cpu: CPU {cpu} is given twice");
            }
            let value = entry
                .get("value")
                .with_context(|| format!("{path}: no \"value\""))?;
            let bytes = match (&self.types, value) {
                (None, Value::String(hex)) => {
                    output::parse_hex(hex).with_context(|| format!("{path}.value"))?
                }
                (None, other) => bail!("{path}.value: expected a hex string, got {other}"),
                (Some(types), value) => {
                    typed_input::encode(&types.btf, types.value, value, &format!("{path}.value"))?
                }
            };
            if bytes.len() != size {
                bail!(
                    "{path}.value: {} bytes, but map `{}` has {size}-byte values per CPU",
                    bytes.len(),
                    self.map.name
                );
            }
            out[cpu * slot..cpu * slot + size].copy_from_slice(&bytes);
        }
        Ok(out)
    }
}

fn json_arg(arg: &str, what: &str) -> anyhow::Result<Value> {
    serde_json::from_str(arg)
        .with_context(|| format!("{what}: `{arg}` is not JSON (--format json takes typed JSON)"))
}

/// The map's BTF types, read from the local kernel by the map's id and
/// checked to be the map the server describes.
fn kernel_types(map: &MapDescription) -> anyhow::Result<Types> {
    let name = &map.name;
    if !map.has_btf {
        bail!(
            "map `{name}` has no BTF for its key and value, so `--format json` cannot encode \
             for it (maps created from a BPF object compiled with -g carry BTF): use `--format hex`"
        );
    }
    let cannot = |what: &str| {
        format!(
            "`--format json` reads map `{name}`'s BTF from this host's kernel ({what}; that needs \
             root on the server's host): use `--format hex`"
        )
    };
    let fd = sys::map_fd_by_id(map.id).with_context(|| cannot(&format!("map id {}", map.id)))?;
    let mut info = sys::map_info(fd.as_fd()).with_context(|| cannot("map info"))?;
    // a switchable map: the types are the active inner map's (slot 0)
    if matches!(
        info.map_type,
        BPF_MAP_TYPE_ARRAY_OF_MAPS | BPF_MAP_TYPE_HASH_OF_MAPS
    ) {
        let mut inner = [0u8; 4];
        let found = sys::lookup(fd.as_fd(), &0u32.to_ne_bytes(), &mut inner)
            .with_context(|| cannot("the outer map's slot 0"))?;
        if !found {
            bail!("map `{name}`: its outer map has no active inner map in slot 0");
        }
        let inner_fd = sys::map_fd_by_id(u32::from_ne_bytes(inner))
            .with_context(|| cannot("the active inner map"))?;
        info = sys::map_info(inner_fd.as_fd()).with_context(|| cannot("inner map info"))?;
    } else if !map.switchable && info.name != map.kernel_name {
        // (a switchable map's id is its active inner map's, which changes
        // with every switch; its shape is checked below)
        bail!(
            "map id {} on this host is `{}`, not map `{name}` (`{}`) the server mirrors: is the \
             server on another host? `--format json` needs the CLI on the server's host",
            map.id,
            info.name,
            map.kernel_name
        );
    }
    if (info.key_size, info.value_size) != (map.key_size, map.value_size) {
        bail!(
            "map id {} on this host has {}-byte keys and {}-byte values, not the {} and {} of \
             map `{name}`: is the server on another host?",
            map.id,
            info.key_size,
            info.value_size,
            map.key_size,
            map.value_size
        );
    }
    if info.btf_id == 0 || info.btf_value_type_id == 0 {
        bail!("map `{name}` has no BTF for its key and value in the kernel: use `--format hex`");
    }
    let data = sys::btf_fd_by_id(info.btf_id)
        .and_then(|fd| sys::btf_data(fd.as_fd()))
        .with_context(|| cannot(&format!("BTF object {}", info.btf_id)))?;
    let btf = Btf::parse(&data).with_context(|| format!("map `{name}`'s BTF"))?;
    // maps declared with a key type id of 0 (BTF_KEY_TYPE_ID 0) keep their
    // key untyped
    if info.btf_key_type_id == 0 {
        bail!("map `{name}` has no BTF type for its key: use `--format hex`");
    }
    Ok(Types {
        btf,
        key: info.btf_key_type_id,
        value: info.btf_value_type_id,
    })
}
