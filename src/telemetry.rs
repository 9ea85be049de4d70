//! Logging setup.

use tracing_subscriber::{fmt, prelude::*, EnvFilter};

use crate::config::LogFormat;

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,kube=warn,sqlx=warn,hyper=warn,rustls=warn"));
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Json => registry.with(fmt::layer().json().with_writer(std::io::stderr)).init(),
        LogFormat::Text => registry.with(fmt::layer().with_writer(std::io::stderr)).init(),
    }
}
