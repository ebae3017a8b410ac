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
            Command::Serve => serve(config).await,
            Command::Admin(Admin::CreateUser { name, role }) => {
                let user = startup::admin_create_user(config, &name, &role).await?;
                println!("created user {} ({})", user.name, user.id);
                println!("api key (shown once): {}", user.key);
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
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
