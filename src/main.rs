use std::process::ExitCode;

use clap::Parser;

use audit_guard::config::{Cli, Command, DataStorageCommand};
use audit_guard::{crd, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    let result = match cli.command {
        Command::Crd => crd::crd_yaml().map(|yaml| print!("{yaml}")),
        Command::PreDeleteCheck => match audit_guard::pre_delete::run().await {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::FAILURE,
            Err(e) => Err(e),
        },
        Command::Certs(args) => audit_guard::certs::generate(&(&args).into()),
        Command::Serve(args) => audit_guard::serve::run(*args).await,
        Command::Datastorage(args) => match &args.command {
            Some(DataStorageCommand::Migrate(m)) => audit_guard::datastorage::migrate::run(&m.into()).await,
            None => audit_guard::datastorage::run((&*args).into()).await,
        },
        Command::Auditor(auditor) => {
            // The auditor's checks: 0 passed, 1 the check failed, 2 could not check.
            return match audit_guard::auditor::cli::run(auditor).await {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(1),
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(2)
                }
            };
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
