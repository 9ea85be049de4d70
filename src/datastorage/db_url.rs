//! Where the database is: a PostgreSQL URL from a flag or from the file it names (a mounted
//! Secret), shared by the service, its migration and the auditor's direct reads.

use std::path::Path;

use anyhow::Context as _;

/// The database URL from the flag or from the file it names (trimmed; an empty one means none).
pub fn database_url(url: Option<&str>, file: Option<&Path>) -> anyhow::Result<Option<String>> {
    let url = match (url, file) {
        (Some(_), Some(_)) => anyhow::bail!("give the database URL either directly or as a file, not both"),
        (Some(u), None) => u.to_string(),
        (None, Some(f)) => std::fs::read_to_string(f)
            .with_context(|| format!("reading the database URL from {}", f.display()))?
            .trim()
            .to_string(),
        (None, None) => return Ok(None),
    };
    Ok(Some(url).filter(|u| !u.is_empty()))
}
