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
    let mut client = mapsync_client::Client::connect(&args.client.endpoint).await?;
    let listing = client.list(&args.map).await?;
    let mut out = std::io::stdout().lock();
    if args.client.json {
        for (key, value) in &listing.entries {
            output::emit(&mut out, &output::entry_json(key, value))?;
        }
    } else {
        output::emit(
            &mut out,
            &format!(
                "{}: {} entries at revision {}",
                args.map,
                listing.entries.len(),
                listing.revision
            ),
        )?;
        for (key, value) in &listing.entries {
            output::emit(
                &mut out,
                &format!("key {}  value {}", output::hex(key), output::hex(value)),
            )?;
        }
    }
    Ok(())
}
