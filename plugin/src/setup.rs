//! Where the plug-in finds what the engine needs at run time.
//!
//! GIMP starts the plug-in from `~/.config/GIMP/3.0/plug-ins/pie/`, far from
//! the `pie` command's `<prefix>/lib/pie/`. install.sh writes `pie.env` beside
//! the plug-in, one `NAME=value` a line (the ONNX Runtime library, the
//! trainer's Python, ...). Each is set in the environment before the engine
//! runs, unless the environment already has it (so a test or a user can
//! override any of them). (The engine also finds an ONNX Runtime library
//! lying beside the plug-in by itself.)

use std::path::{Path, PathBuf};

pub fn plug_in_dir() -> Option<PathBuf> {
    std::env::current_exe().ok()?.parent().map(Path::to_path_buf)
}

/// Runs before `gimp_main`, while the process has one thread.
pub fn environment() {
    let Some(dir) = plug_in_dir() else { return };
    if let Ok(text) = std::fs::read_to_string(dir.join("pie.env")) {
        for (name, value) in parse_env(&text) {
            if std::env::var_os(&name).is_none() {
                std::env::set_var(name, value);
            }
        }
    }
}

/// `NAME=value` lines; blank lines and `#` comments are skipped, values may be
/// quoted with "..." or '...'.
pub fn parse_env(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.split_once('=')?;
            let name = name.trim().trim_start_matches("export ").trim();
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return None;
            }
            let value = value.trim();
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(value);
            Some((name.to_string(), value.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_lines() {
        let got = parse_env("# c\n\nORT_DYLIB_PATH=/a/b.so\nexport PIE_X=\"q v\"\nbad name=1\nY='z'\n");
        assert_eq!(
            got,
            vec![
                ("ORT_DYLIB_PATH".into(), "/a/b.so".into()),
                ("PIE_X".into(), "q v".into()),
                ("Y".into(), "z".into())
            ]
        );
    }
}
