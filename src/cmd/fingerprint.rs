//! `kaudit fingerprint`: the fingerprint of one message, in hex.

use std::path::PathBuf;

use clap::Args;

use crate::exit::Exit;

#[derive(Debug, Args)]
#[group(required = true, multiple = false, id = "payload_source")]
pub struct PayloadSource {
    /// The payload, as text.
    #[arg(long)]
    payload: Option<String>,
    /// A file holding the payload bytes.
    #[arg(long)]
    payload_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct FingerprintArgs {
    /// The message's business id (usually its key).
    #[arg(long, default_value = "")]
    business_id: String,
    #[command(flatten)]
    payload: PayloadSource,
}

pub async fn run(args: FingerprintArgs) -> Result<(), Exit> {
    let payload = match (args.payload.payload, &args.payload.payload_file) {
        (Some(text), _) => text.into_bytes(),
        (None, Some(path)) => {
            std::fs::read(path).map_err(|e| Exit::usage(format!("cannot read payload file {}: {e}", path.display())))?
        }
        (None, None) => unreachable!("clap requires one payload source"),
    };
    println!("{:016x}", kaudit_agent::fingerprint(args.business_id.as_bytes(), &payload));
    Ok(())
}
