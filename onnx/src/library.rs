//! The concept library: one folder per concept under the library folder.

use std::path::{Path, PathBuf};

use serde::{Serialize, Serializer};

use crate::backbone::Backbone;
use crate::bundle::Bundle;
use crate::manifest::{self, Manifest, Role, Stage};
use crate::safefs;
use crate::{Error, Result};

#[derive(Debug, Clone)]
pub struct Library {
    path: PathBuf,
}

/// One entry of `Library::list`, read from the manifest without checking
/// hashes (that is `load`'s job).
#[derive(Debug, Clone, Serialize)]
pub struct ConceptInfo {
    pub name: String,
    pub path: PathBuf,
    /// `None` when the manifest could not be read (listed as 0).
    #[serde(serialize_with = "stage_or_0")]
    pub stage: Option<Stage>,
    /// `None` when the manifest could not be read (listed as "?").
    #[serde(serialize_with = "role_or_unknown")]
    pub role: Option<Role>,
    /// `None` when the manifest could not be read (listed as "").
    #[serde(serialize_with = "backbone_or_empty")]
    pub backbone: Option<Backbone>,
    /// Stage II: the scene it grew from.
    pub parent: Option<String>,
    pub created: String,
    /// Why the manifest could not be read, if it could not.
    pub problem: Option<String>,
    /// What the concept's folder holds on disk (an sd concept: gigabytes).
    pub bytes: u64,
}

/// A training run that was stopped and can be continued with `--resume`:
/// its checkpoint is all that is left of it (and can be large).
#[derive(Debug, Clone, Serialize)]
pub struct InterruptedRun {
    pub name: String,
    pub checkpoint: PathBuf,
    /// `None` when the checkpoint does not say (listed as 0).
    #[serde(serialize_with = "stage_or_0")]
    pub stage: Option<Stage>,
    pub bytes: u64,
}

// What `pie concepts list --json` has always said for a concept it could not read.
fn stage_or_0<S: Serializer>(v: &Option<Stage>, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_u8(v.map_or(0, Stage::number))
}

fn role_or_unknown<S: Serializer>(v: &Option<Role>, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(v.map_or("?", Role::name))
}

fn backbone_or_empty<S: Serializer>(v: &Option<Backbone>, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(v.map_or("", Backbone::name))
}

impl Library {
    /// `explicit` (`--library`), else `$PIE_HOME`, else `$XDG_DATA_HOME/pie`,
    /// else `~/.local/share/pie` ([`crate::locations::Context::library`]).
    /// The folder need not exist yet.
    pub fn open(explicit: Option<PathBuf>) -> Result<Library> {
        let path = crate::locations::Context::current()
            .library(explicit.as_deref())
            .ok_or_else(|| Error::bad("no concept library: pass --library DIR or set PIE_HOME"))?
            .path;
        if path.exists() && !path.is_dir() {
            return Err(Error::bad(format!("the concept library {} is not a folder", path.display())));
        }
        Ok(Library { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where concept `name` lives (or would live); refuses names that are not
    /// plain concept names, so a name can never point outside the library.
    pub fn concept_dir(&self, name: &str) -> Result<PathBuf> {
        if !manifest::is_concept_name(name) {
            return Err(Error::bad(format!(
                "{name:?} is not a concept name: use 1-64 characters a-z, 0-9, '-' or '_', starting with a letter or digit"
            )));
        }
        Ok(self.path.join(name))
    }

    pub fn contains(&self, name: &str) -> bool {
        self.concept_dir(name).map(|d| d.join("bundle.json").is_file()).unwrap_or(false)
    }

    /// All concepts, sorted by name. Folders starting with `.` (partial
    /// bundles, checkpoints) are never concepts.
    pub fn list(&self) -> Result<Vec<ConceptInfo>> {
        let rd = match std::fs::read_dir(&self.path) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("cannot read the concept library", &self.path, e)),
        };
        let mut out = Vec::new();
        for ent in rd {
            let ent = ent.map_err(|e| Error::io("cannot read the concept library", &self.path, e))?;
            let name = ent.file_name().to_string_lossy().into_owned();
            let path = ent.path();
            if name.starts_with('.') || !path.join("bundle.json").is_file() {
                continue;
            }
            let parsed = safefs::read_bounded(&path.join("bundle.json"), safefs::MAX_JSON_BYTES)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Manifest>(&b).map_err(|e| e.to_string()));
            let bytes = folder_bytes(&path);
            out.push(match parsed {
                Ok(m) => ConceptInfo {
                    stage: Some(m.stage),
                    role: Some(m.stage.role()),
                    backbone: Some(m.backbone),
                    parent: m.parent.map(|p| p.name),
                    created: m.created,
                    problem: None,
                    name,
                    path,
                    bytes,
                },
                Err(e) => ConceptInfo {
                    name,
                    path,
                    stage: None,
                    role: None,
                    backbone: None,
                    parent: None,
                    created: String::new(),
                    problem: Some(format!("bundle.json: {e}")),
                    bytes,
                },
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The folder of the existing concept `name`, or an error that says what
    /// the library does hold and which of those names the user probably meant.
    fn existing_dir(&self, name: &str) -> Result<PathBuf> {
        let known: Vec<String> = self.list().unwrap_or_default().into_iter().map(|c| c.name).collect();
        let dir = match self.concept_dir(name) {
            Ok(dir) => dir,
            Err(e) => {
                return Err(match suggest(name, &known) {
                    Some(s) => Error::bad(format!("{e} (did you mean {s:?}?)")),
                    None => e,
                })
            }
        };
        if dir.is_dir() {
            return Ok(dir);
        }
        const SHOWN: usize = 12;
        let mut names = known.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
        if known.len() > SHOWN {
            names.push_str(&format!(" and {} more: `pie concepts list`", known.len() - SHOWN));
        }
        let hint = match (suggest(name, &known), known.is_empty()) {
            (_, true) => "the library is empty; learn one with `pie learn-scene`".to_string(),
            (Some(s), false) => format!("did you mean {s:?}? known: {names}"),
            (None, false) => format!("known: {names}"),
        };
        Err(Error::bad(format!("no concept named {name:?} in {} ({hint})", self.path.display())))
    }

    /// Loads and fully validates concept `name`.
    pub fn load(&self, name: &str) -> Result<Bundle> {
        let dir = self.existing_dir(name)?;
        let b = Bundle::load(&dir)?;
        if b.manifest.name != name {
            return Err(Error::Bundle {
                bundle: name.to_string(),
                file: "bundle.json".into(),
                what: format!("names the concept {:?}, but its folder is {name:?}", b.manifest.name),
            });
        }
        Ok(b)
    }

    /// Where the trainer keeps the checkpoints of concept `name`.
    pub fn checkpoint_dir(&self, name: &str) -> Result<PathBuf> {
        self.concept_dir(name)?;
        Ok(self.path.join(".checkpoints").join(name))
    }

    /// Stopped training runs that `--resume` can continue, sorted by name.
    pub fn interrupted(&self) -> Vec<InterruptedRun> {
        let root = self.path.join(".checkpoints");
        if !safefs::is_real_dir(&root) {
            return Vec::new();
        }
        let Ok(rd) = std::fs::read_dir(root) else { return Vec::new() };
        let mut out: Vec<InterruptedRun> = rd
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_str()?.to_string();
                let checkpoint = e.path();
                // The trainer resumes from state.pt; a finished run leaves only its weights.
                if !manifest::is_concept_name(&name) || !checkpoint.join("state.pt").is_file() {
                    return None;
                }
                let stage = safefs::read_bounded(&checkpoint.join("meta.json"), safefs::MAX_JSON_BYTES)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<CheckpointMeta>(&b).ok())
                    .and_then(|m| m.stage);
                let bytes = folder_bytes(&checkpoint);
                Some(InterruptedRun { name, checkpoint, stage, bytes })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Deletes concept `name` and its training checkpoints, or only the
    /// checkpoints of a stopped run that never became a concept. Each is first
    /// renamed to a dot-name, so a half-deleted concept is never listed and a
    /// half-deleted checkpoint is never resumed. Only what pie can tell it
    /// wrote is deleted, and no link is followed: anything else there is left
    /// alone with an error, before anything is deleted.
    pub fn remove(&self, name: &str) -> Result<()> {
        let ck = self.checkpoint_dir(name)?;
        let has_ck = std::fs::symlink_metadata(&ck).is_ok();
        if has_ck {
            self.check_written_by_pie(&ck, Written::Checkpoint)?;
        }
        let trash = |parent: &Path| parent.join(format!(".removing-{name}-{}", std::process::id()));
        if !self.contains(name) && has_ck {
            return remove_tree(&ck, &trash(&self.path.join(".checkpoints")));
        }
        let dir = self.existing_dir(name)?;
        self.check_written_by_pie(&dir, Written::Concept)?;
        remove_tree(&dir, &trash(&self.path))?;
        if has_ck {
            remove_tree(&ck, &trash(&self.path.join(".checkpoints")))?;
        }
        Ok(())
    }

    /// A concept folder or a checkpoint folder is pie's when it is a real
    /// folder (not a link) directly in the library (or its real
    /// `.checkpoints`), holding only regular files, with the file that marks
    /// it: `bundle.json`, or the trainer's state, weights or metadata.
    fn check_written_by_pie(&self, dir: &Path, what: Written) -> Result<()> {
        let leave = |why: &str| Err(Error::bad(format!("{} {why}, so pie leaves it alone", dir.display())));
        if what == Written::Checkpoint && !safefs::is_real_dir(&self.path.join(".checkpoints")) {
            return leave("is reached through a .checkpoints that is not a folder of the library (a link?)");
        }
        if !safefs::is_real_dir(dir) {
            return leave("is not a folder (a link or a file)");
        }
        let rd = std::fs::read_dir(dir).map_err(|e| Error::io("cannot read", dir, e))?;
        let mut marked = false;
        for ent in rd {
            let ent = ent.map_err(|e| Error::io("cannot read", dir, e))?;
            let is_file = ent.file_type().is_ok_and(|t| t.is_file());
            let n = ent.file_name().to_string_lossy().into_owned();
            if !is_file {
                return leave(&format!("holds {n:?}, which is not a regular file pie writes"));
            }
            marked |= match what {
                Written::Concept => n == "bundle.json",
                Written::Checkpoint => ["state.pt", "weights.pt", "meta.json"].contains(&n.as_str()),
            };
            if what == Written::Checkpoint
                && !(n.ends_with(".pt") || n.ends_with(".json") || n.starts_with('.'))
            {
                return leave(&format!("holds {n:?}, which the trainer never writes into a checkpoint"));
            }
        }
        if !marked {
            return leave(match what {
                Written::Concept => "has no bundle.json: it is not a concept",
                Written::Checkpoint => "holds no training state: it is not a checkpoint",
            });
        }
        Ok(())
    }
}

/// What `Library::interrupted` reads of a checkpoint's meta.json (the
/// trainer's; it holds more).
#[derive(serde::Deserialize)]
struct CheckpointMeta {
    stage: Option<Stage>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Written {
    Concept,
    Checkpoint,
}

/// A size on disk as people read it in listings: "11.3 MB", "2104.6 MB".
pub fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// The bytes of the regular files directly in `dir` (bundles and
/// checkpoints are flat folders); 0 when it cannot be read.
fn folder_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|f| f.ok()?.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum())
        .unwrap_or(0)
}

/// Renames `dir` to `trash` (same folder, a dot-name), then deletes it.
fn remove_tree(dir: &Path, trash: &Path) -> Result<()> {
    std::fs::rename(dir, trash).map_err(|e| Error::io("cannot remove", dir, e))?;
    std::fs::remove_dir_all(trash).map_err(|e| Error::io("cannot finish removing (left in)", trash, e))
}

/// The known name closest to `name` (case folded, at most two edits, or one
/// containing the other), if one is close enough to be what the user meant.
pub fn suggest<'a>(name: &str, known: &'a [String]) -> Option<&'a str> {
    let want = name.to_lowercase();
    known
        .iter()
        .map(|k| (edit_distance(&want, k), k))
        .filter(|(d, k)| {
            *d <= 2.min(k.chars().count().saturating_sub(1))
                || (want.len() >= 3 && (k.contains(&want) || want.contains(k.as_str())))
        })
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.as_str())
}

/// Levenshtein distance, counting an adjacent swap as one edit.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, v) in d[0].iter_mut().enumerate() {
        *v = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_catch_typos_but_not_strangers() {
        let known: Vec<String> = ["dog", "forest", "kitchen-2", "my-backpack"].map(String::from).to_vec();
        assert_eq!(suggest("dgo", &known), Some("dog"));
        assert_eq!(suggest("Dog", &known), Some("dog"));
        assert_eq!(suggest("forst", &known), Some("forest"));
        assert_eq!(suggest("kitchen", &known), Some("kitchen-2"));
        assert_eq!(suggest("backpack", &known), Some("my-backpack"));
        assert_eq!(suggest("car", &known), None);
        assert_eq!(suggest("x", &known), None);
        assert_eq!(suggest("seascape", &known), None);
    }
}
