//! The crate's JSON files (summaries, instruction counts, capacity searches): pretty, ending in a newline, and
//! read only by a build that knows their schema version.

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Reads `path` as `what` of schema `version`. The version is checked first, so a file of another version fails
/// on its version rather than on some field.
pub(crate) fn read<T: DeserializeOwned>(path: &Path, what: &str, version: u32) -> Result<T, String> {
    let context = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| context(&e))?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| context(&e))?;
    let found = value.get("schema_version").and_then(serde_json::Value::as_u64);
    if found != Some(u64::from(version)) {
        let found = found.map_or_else(|| "missing".to_owned(), |v| v.to_string());
        return Err(context(&format!("{what} schema version {found} (this build reads {version})")));
    }
    serde_json::from_value(value).map_err(|e| context(&e))
}

pub(crate) fn write<T: Serialize>(value: &T, path: &Path) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
    std::fs::write(path, text + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, serde::Deserialize)]
    struct Doc {
        schema_version: u32,
        name: String,
    }

    #[test]
    fn a_file_of_another_version_fails_on_its_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("doc.json");
        write(&Doc { schema_version: 1, name: "a".into() }, &path).unwrap();
        assert_eq!(read::<Doc>(&path, "doc", 1).unwrap(), Doc { schema_version: 1, name: "a".into() });
        let err = read::<Doc>(&path, "doc", 2).unwrap_err();
        assert!(err.ends_with("doc schema version 1 (this build reads 2)"), "{err}");
        std::fs::write(&path, r#"{"name": 3}"#).unwrap();
        let err = read::<Doc>(&path, "doc", 1).unwrap_err();
        assert!(err.contains("doc schema version missing"), "{err}");
    }
}
