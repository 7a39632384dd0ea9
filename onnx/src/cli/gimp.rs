//! What `pie doctor` says about GIMP: which GIMP 3.x are installed, which
//! profiles they read, and whether each profile holds the plug-in that was
//! installed with this `pie` (GIMP 3.2 copies a 3.0 profile once, on its first
//! start, so an old pie can sit in one profile while another has the new one).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

/// The names GIMP 3 installs its binaries under: 3.2 ships `-3.2` and `-3`,
/// 3.0 only `-3.0`. Console names first: they run without a display.
const BINARIES: &[&str] = &[
    "gimp-console-3.2",
    "gimp-console-3",
    "gimp-console-3.0",
    "gimp-console",
    "gimp-3.2",
    "gimp-3",
    "gimp-3.0",
    "gimp",
];

/// The install record install.sh writes beside the pie command's libraries:
/// the sha256 of the plug-in binary it installed into the GIMP profiles.
pub const RECORD: &str = "gimp-plugin.sha256";

pub struct Gimp {
    pub version: String,
    pub binary: PathBuf,
}

impl Gimp {
    /// "3.2" for "3.2.6".
    pub fn minor(&self) -> String {
        self.version.split('.').take(2).collect::<Vec<_>>().join(".")
    }
}

/// Every GIMP 3.x on PATH, one entry per installed binary (links such as
/// `gimp-console-3` -> `gimp-console-3.2` are one).
pub fn installed() -> Vec<Gimp> {
    let mut found: Vec<Gimp> = Vec::new();
    let mut seen: Vec<PathBuf> = Vec::new();
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in BINARIES {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if !is_executable(&p) {
                continue;
            }
            let real = std::fs::canonicalize(&p).unwrap_or_else(|_| p.clone());
            if seen.contains(&real) {
                break;
            }
            seen.push(real);
            if let Some(version) = version_of(&p) {
                if version.starts_with("3.") && !found.iter().any(|g| g.version == version) {
                    found.push(Gimp { version, binary: p });
                }
            }
            break;
        }
    }
    found.sort_by(|a, b| a.version.cmp(&b.version));
    found
}

fn version_of(binary: &Path) -> Option<String> {
    let out = Command::new(binary).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v = text.split("version ").nth(1)?.split_whitespace().next()?;
    v.chars().next().filter(char::is_ascii_digit)?;
    Some(v.to_string())
}

pub fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A GIMP profile folder and the GIMP minor version that reads it.
pub struct Profile {
    pub dir: PathBuf,
    pub version: String,
    pub flatpak: bool,
}

/// The profiles a user's GIMP 3 reads: `$GIMP3_DIRECTORY` when set (every
/// version then shares it), else each `GIMP/3.x` under `$XDG_CONFIG_HOME`
/// (`~/.config`) that exists or belongs to an installed GIMP, and the
/// Flatpak's under `~/.var/app/org.gimp.GIMP/config`.
pub fn profiles(gimps: &[Gimp]) -> Vec<Profile> {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    let home = env("HOME");
    if let Some(d) = env("GIMP3_DIRECTORY") {
        return vec![Profile { dir: d, version: "3.x".into(), flatpak: false }];
    }
    let mut out = Vec::new();
    if let Some(c) = env("XDG_CONFIG_HOME").or_else(|| home.as_ref().map(|h| h.join(".config"))) {
        let mut versions = versions_in(&c.join("GIMP"));
        versions.extend(gimps.iter().map(Gimp::minor));
        if versions.is_empty() {
            versions.push("3.0".into());
        }
        versions.sort();
        versions.dedup();
        out.extend(versions.into_iter().map(|v| Profile {
            dir: c.join("GIMP").join(&v),
            version: v,
            flatpak: false,
        }));
    }
    if let Some(h) = &home {
        let root = h.join(".var/app/org.gimp.GIMP/config/GIMP");
        out.extend(versions_in(&root).into_iter().map(|v| Profile {
            dir: root.join(&v),
            version: v,
            flatpak: true,
        }));
    }
    out
}

/// The `3.x` folder names under `dir`.
fn versions_in(dir: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut v: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| {
            n.strip_prefix("3.").is_some_and(|m| !m.is_empty() && m.chars().all(|c| c.is_ascii_digit()))
        })
        .collect();
    v.sort();
    v
}

/// Where the plug-in sits in a profile.
pub fn plugin_in(profile: &Path) -> PathBuf {
    profile.join("plug-ins/pie/pie")
}

/// The sha256 install.sh recorded for the plug-in it installed with this pie:
/// `<prefix>/lib/pie/gimp-plugin.sha256` beside `<prefix>/bin/pie`.
pub fn recorded_plugin() -> (PathBuf, Option<String>) {
    let record = pie::locations::Context::current()
        .installed_dir()
        .map(|d| d.join(RECORD))
        .unwrap_or_else(|| PathBuf::from(RECORD));
    let sum = std::fs::read_to_string(&record)
        .ok()
        .and_then(|t| t.split_whitespace().next().map(str::to_string))
        .filter(|s| s.len() == 64 && s.chars().all(|c| c.is_ascii_hexdigit()));
    (record, sum)
}

/// One report line and one JSON entry per profile.
pub fn report(lines: &mut Vec<String>) -> Value {
    let gimps = installed();
    if gimps.is_empty() {
        lines.push("GIMP 3: not found on PATH (looked for gimp-console-3.2, gimp-3.2, gimp-console-3, gimp-3, gimp-console-3.0, gimp-3.0, gimp)".into());
    }
    for g in &gimps {
        lines.push(format!("GIMP {}: {}", g.version, g.binary.display()));
    }
    let (record, current) = recorded_plugin();
    let mut entries = Vec::new();
    let mut first_installed: Option<PathBuf> = None;
    let mut looked = Vec::new();
    for p in profiles(&gimps) {
        let plugin = plugin_in(&p.dir);
        looked.push(plugin.display().to_string());
        let whose =
            if p.flatpak { format!("the Flatpak GIMP {}", p.version) } else { format!("GIMP {}", p.version) };
        let state = if !is_executable(&plugin) {
            if !p.dir.exists() && gimps.iter().any(|g| g.minor() == p.version) {
                lines.push(format!(
                    "GIMP plug-in: none for {whose} yet: {} does not exist (GIMP creates it on its first start, copying an older 3.x profile with its plug-ins; run install.sh again after that first start)",
                    p.dir.display()
                ));
            }
            "missing"
        } else {
            first_installed.get_or_insert_with(|| plugin.clone());
            let sum = pie::bundle::sha256_file(&plugin);
            let (state, line) = match (&current, &sum) {
                (_, Err(e)) => ("unreadable", format!("GIMP plug-in: cannot read {} ({e})", plugin.display())),
                (None, Ok(_)) => ("unknown", format!(
                    "GIMP plug-in: installed at {} ({whose}); whether it is the current one is unknown: no install record at {} (run install.sh)",
                    plugin.display(), record.display()
                )),
                (Some(c), Ok(s)) if c.eq_ignore_ascii_case(s) => {
                    ("current", format!("GIMP plug-in: installed at {} ({whose}), the current one", plugin.display()))
                }
                (Some(_), Ok(_)) => ("stale", format!(
                    "GIMP plug-in: stale at {} ({whose}): it is not the plug-in installed with this pie (install record {}); run install.sh again",
                    plugin.display(), record.display()
                )),
            };
            lines.push(line);
            if p.flatpak {
                lines.push("  note: the Flatpak GIMP runs plug-ins inside its sandbox, with its own libraries; a plug-in built against your system's libgimp may not start there".into());
            }
            state
        };
        entries.push(json!({"profile": p.dir, "gimp": p.version, "flatpak": p.flatpak, "plugin": plugin, "state": state}));
    }
    if first_installed.is_none() {
        lines.push(format!("GIMP plug-in: not installed (looked at {}; run install.sh)", looked.join(", ")));
    }
    json!({
        "gimp": gimps.iter().map(|g| json!({"version": g.version, "binary": g.binary})).collect::<Vec<_>>(),
        "gimp_plugin": {"path": first_installed, "installed": first_installed.is_some(), "looked_at": looked,
                        "record": record, "profiles": entries},
    })
}
