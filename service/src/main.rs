//! The `filewallball` command: serve (the default), print the configuration, or administer users.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use filewallball::{Application, Config, startup, telemetry};

#[derive(Parser)]
#[command(version, about = "FileWallBall file service")]
struct Cli {
    /// TOML configuration file; `FWB__SECTION__KEY` environment variables override it.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Print the merged configuration (secrets masked) and exit.
    #[arg(long)]
    print_config: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP service (what happens with no subcommand).
    Serve,
    /// Manage users from the command line, e.g. to create the first admin.
    #[command(subcommand)]
    Admin(Admin),
}

#[derive(Subcommand)]
enum Admin {
    /// Create a user and print their first API key (shown only this once).
    CreateUser {
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "user")]
        role: String,
    },
    /// Compare the blob store with the database: orphaned bytes, missing bytes, wrong reference counts.
    /// Exits non-zero while problems remain. Safe beside a running service.
    Fsck {
        /// Remove orphaned bytes and stale temporary files, and recount references.
        #[arg(long)]
        repair: bool,
        /// Leave blobs and temporary files younger than this alone (uploads in flight); default `blob.sweep_grace_secs`.
        #[arg(long)]
        grace_secs: Option<u64>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("filewallball: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.print_config {
        print!("{}", config.to_masked_toml());
        return ExitCode::SUCCESS;
    }
    telemetry::init_tracing(&config.log, config.telemetry.console_addr);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("filewallball: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => serve(config).await.map(|()| ExitCode::SUCCESS),
            Command::Admin(Admin::CreateUser { name, role }) => {
                let user = startup::admin_create_user(config, &name, &role).await?;
                println!("created user {} ({})", user.name, user.id);
                println!("api key (shown once): {}", user.key);
                Ok(ExitCode::SUCCESS)
            }
            Command::Admin(Admin::Fsck { repair, grace_secs }) => {
                let grace = std::time::Duration::from_secs(grace_secs.unwrap_or(config.blob.sweep_grace_secs));
                let report = startup::admin_fsck(config, repair, grace).await?;
                for line in &report.lines {
                    println!("{line}");
                }
                Ok(if report.unresolved == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("filewallball: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let data_dir = config.storage.data_dir.clone();
    let app = Application::build(config).await?;
    tracing::info!(port = app.port(), data_dir = %data_dir.display(), "filewallball listening");
    app.run_until_stopped(startup::shutdown_signal()).await
}
