//! `mapsync list`: every entry of a map at one revision.

use clap::Args;

use super::output::{self, ClientArgs};

/// Arguments of `mapsync list`.
#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The map's name (see `mapsync serve --map NAME=...`).
    pub map: String,
}

/// Prints every entry of the map.
pub async fn run(args: ListArgs) -> anyhow::Result<()> {
    let (renderer, listing) = args
        .client
        .within(async {
            let (mut client, renderer) = args
                .client
                .connect_rendering(None, std::slice::from_ref(&args.map))
                .await?;
            let listing = if renderer.decode() {
                client.list_decoded(&args.map).await?
            } else {
                client.list(&args.map).await?
            };
            Ok((renderer, listing))
        })
        .await?;
    let mut out = std::io::stdout().lock();
    if !args.client.json {
        output::emit(
            &mut out,
            &format!(
                "{}: {} entries at revision {} (epoch {:016x})",
                args.map,
                listing.entries.len(),
                listing.revision,
                listing.epoch
            ),
        )?;
    }
    for (i, (key, value)) in listing.entries.iter().enumerate() {
        let decoded = listing.decoded.get(i);
        let json = |pick: fn(&(String, String)) -> &String| {
            decoded
                .map(pick)
                .filter(|t| !t.is_empty())
                .map(String::as_str)
        };
        let key = renderer.key(&args.map, key, json(|d| &d.0))?;
        let value = renderer.value(&args.map, value, json(|d| &d.1))?;
        let line = if args.client.json {
            output::entry_json(key, value)
        } else {
            output::entry_text(&key, &value)
        };
        output::emit(&mut out, &line)?;
    }
    Ok(())
}
