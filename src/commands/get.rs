//! `mapsync get`: the value of one key.

use anyhow::Context;
use clap::Args;
use serde_json::json;

use super::format;
use super::output::{self, ClientArgs};

/// Arguments of `mapsync get`.
#[derive(Args, Debug)]
pub struct GetArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The map's name.
    pub map: String,
    /// The key, as hex bytes in memory order (e.g. 0a000001 or "0a 00 00 01").
    pub key: String,
}

/// Prints the key's value; a missing key is an error.
pub async fn run(args: GetArgs) -> anyhow::Result<()> {
    let key = output::parse_hex(&args.key)?;
    let (renderer, result) = args
        .client
        .within(async {
            let (mut client, renderer) = args
                .client
                .connect_rendering(None, std::slice::from_ref(&args.map))
                .await?;
            let result = if renderer.decode() {
                client.get_decoded(&args.map, &key).await?
            } else {
                client.get(&args.map, &key).await?
            };
            Ok((renderer, result))
        })
        .await?;
    let value = result.value.as_ref().with_context(|| {
        format!(
            "key {} is not in map `{}` (revision {})",
            output::hex(&key),
            args.map,
            result.revision
        )
    })?;
    let shown = renderer.value(&args.map, value, result.value_json.as_deref())?;
    let line = if args.client.json {
        // the key as given: a decoded key needs the server's BTF, and the
        // user typed it in hex
        output::fields(
            json!(output::hex(&key)),
            Some(shown),
            json!({"mod_revision": result.mod_revision, "revision": result.revision}),
        )
        .to_string()
    } else {
        format::value_text(&shown)
    };
    output::emit(&mut std::io::stdout().lock(), &line)
}
