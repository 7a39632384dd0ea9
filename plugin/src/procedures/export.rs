//! The temporary PNG files a layer is handed to the trainer in.

use super::*;

pub(super) const EXPORT_PREFIX: &str = "pie-gimp-";

/// GIMP's cancel kills the plug-in, so its temporary folder stays behind:
/// remove those of plug-in processes that are gone (`pie-gimp-<pid>-…`).
pub(super) fn remove_stale_exports() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(EXPORT_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Writes the layer (and the mask) as PNG files for the trainer, in a
/// temporary folder that is removed when the returned guard is dropped.
pub(super) fn export_for_trainer(
    src: &Source,
    mask: Option<&image::GrayImage>,
) -> Outcome<(tempfile::TempDir, std::path::PathBuf, Option<std::path::PathBuf>)> {
    remove_stale_exports();
    let dir = tempfile::Builder::new()
        .prefix(&format!("{EXPORT_PREFIX}{}-", std::process::id()))
        .tempdir()
        .map_err(|e| Failure::msg(format!("Cannot create a temporary folder for the trainer: {e}")))?;
    let image_path = dir.path().join("layer.png");
    src.for_png()
        .save(&image_path)
        .map_err(|e| Failure::msg(format!("Cannot write {}: {e}", image_path.display())))?;
    let mask_path = match mask {
        Some(m) => {
            let p = dir.path().join("mask.png");
            m.save(&p).map_err(|e| Failure::msg(format!("Cannot write {}: {e}", p.display())))?;
            Some(p)
        }
        None => None,
    };
    Ok((dir, image_path, mask_path))
}
