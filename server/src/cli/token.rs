//! `glmtune token create`: a new API key, written straight to the server's database (so it works
//! whether the server runs or not) and printed once on stdout.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use glmtune_shared::api::Role;

#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create an API key and print it.
    Create(CreateArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum RoleArg {
    Admin,
    Member,
    Viewer,
    /// For `glmtune worker`: leases runs and reports on them, nothing else.
    Worker,
}

#[derive(Debug, Args)]
struct CreateArgs {
    /// The server's data folder (its SQLite database lives there).
    #[arg(long, value_name = "DIR", default_value = "glmtune-data")]
    data_dir: PathBuf,
    /// The server's PostgreSQL URL, when it uses one.
    #[arg(long, value_name = "URL", env = "GLMTUNE_DATABASE_URL")]
    database_url: Option<String>,
    /// A label for the key.
    #[arg(long)]
    name: String,
    #[arg(long, value_enum, default_value_t = RoleArg::Member)]
    role: RoleArg,
}

pub fn run(args: TokenArgs) -> anyhow::Result<()> {
    let TokenCommand::Create(args) = args.command;
    let role = match args.role {
        RoleArg::Admin => Role::Admin,
        RoleArg::Member => Role::Member,
        RoleArg::Viewer => Role::Viewer,
        RoleArg::Worker => Role::Worker,
    };
    if args.name.trim().is_empty() {
        anyhow::bail!("--name must not be empty");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let secret = runtime.block_on(async {
        let db =
            glmtune::serve::open_database(&args.data_dir, args.database_url.as_deref()).await?;
        let secret = glmtune::serve::new_api_secret();
        let key = db.create_api_key(&args.name, role, None, &secret).await?;
        eprintln!(
            "glmtune: created API key {} ({}, role {})",
            key.id,
            key.name,
            key.role.as_str()
        );
        Ok::<_, anyhow::Error>(secret)
    })?;
    println!("{secret}");
    Ok(())
}
