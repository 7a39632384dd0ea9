//! Writing images: into a temporary file in the target folder, renamed
//! into place only when every output is complete.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageFormat};
use pie::{Error, Result};

pub fn format_for(out: &Path) -> Result<ImageFormat> {
    let ext = out.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).unwrap_or_default();
    match ext.as_str() {
        "png" => Ok(ImageFormat::Png),
        "tif" | "tiff" => Ok(ImageFormat::Tiff),
        "jpg" | "jpeg" => Ok(ImageFormat::Jpeg),
        _ => Err(Error::bad(format!(
            "{}: unknown output type; end the name with .png, .tif or .jpg",
            out.display()
        ))),
    }
}

/// `out` for one result; `stem-1.ext`, `stem-2.ext`, … for several.
pub fn output_paths(out: &Path, n: usize) -> Vec<PathBuf> {
    if n <= 1 {
        return vec![out.to_path_buf()];
    }
    let stem = out.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let ext = out.extension().map(|e| format!(".{}", e.to_string_lossy())).unwrap_or_default();
    (1..=n).map(|i| out.with_file_name(format!("{stem}-{i}{ext}"))).collect()
}

fn folder_of(out: &Path) -> PathBuf {
    match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Whether `a` and `b` name the same existing file (links and `./` included).
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// Fails early, before any work, if `out` cannot be written. `inputs` are the
/// files the command reads: the result is renamed over `out`, so writing to one
/// of them would silently destroy the user's original (even a read-only one).
/// Nothing is written into the concept `library` either: a result renamed over
/// a concept's file would destroy the concept.
pub fn check_writable(out: &Path, inputs: &[&Path], library: &Path) -> Result<()> {
    if out.is_dir() {
        return Err(Error::bad(format!(
            "{} is a folder; give a file name such as result.png",
            out.display()
        )));
    }
    if let (Ok(dir), Ok(lib)) = (std::fs::canonicalize(folder_of(out)), std::fs::canonicalize(library)) {
        if dir.starts_with(&lib) {
            return Err(Error::bad(format!(
                "--out {} is inside the concept library {}: pie keeps results out of it, so no concept is overwritten; \
                 choose another folder",
                out.display(),
                library.display()
            )));
        }
    }
    format_for(out)?;
    if let Some(input) = inputs.iter().find(|i| same_file(out, i)) {
        return Err(Error::bad(format!(
            "--out {} is the input {}: pie does not overwrite its inputs; choose another output name",
            out.display(),
            input.display()
        )));
    }
    if std::fs::metadata(out).is_ok_and(|m| m.permissions().readonly()) {
        return Err(Error::bad(format!(
            "{} exists and is read-only; choose another output name or make it writable",
            out.display()
        )));
    }
    let dir = folder_of(out);
    if !dir.is_dir() {
        return Err(Error::bad(format!(
            "cannot write {}: the folder {} does not exist",
            out.display(),
            dir.display()
        )));
    }
    tempfile::Builder::new().prefix(".pie-probe-").tempfile_in(&dir).map(drop).map_err(|e| {
        Error::io(
            &format!("cannot write {}: cannot create a file in", out.display()),
            &dir,
            without_temp_name(e),
        )
    })
}

/// tempfile's errors name the random temporary file, which means nothing to
/// the user; the OS error underneath is what they need.
fn without_temp_name(e: std::io::Error) -> std::io::Error {
    let msg = e.to_string();
    // tempfile appends ` at path "<dir>/.pie-…"` to the OS error's own text.
    let os = msg.split_once(" at path \"").map_or(msg.as_str(), |(os, _)| os);
    std::io::Error::new(e.kind(), os.to_string())
}

/// What writing an image of colour type `c` to `out` would drop, if `out` is a JPEG.
pub fn jpeg_loses(out: &Path, c: image::ColorType) -> Option<&'static str> {
    if !matches!(format_for(out), Ok(ImageFormat::Jpeg)) {
        return None;
    }
    let deep = c.bytes_per_pixel() / c.channel_count() > 1;
    match (c.has_alpha(), deep) {
        (true, true) => Some("alpha and 16 bits"),
        (true, false) => Some("alpha"),
        (false, true) => Some("16 bits"),
        (false, false) => None,
    }
}

/// Converts to what the format can store.
fn storable(img: &DynamicImage, f: ImageFormat) -> DynamicImage {
    use DynamicImage::*;
    match (f, img) {
        (ImageFormat::Jpeg, ImageLuma8(_)) | (ImageFormat::Jpeg, ImageRgb8(_)) => img.clone(),
        (ImageFormat::Jpeg, ImageLuma16(_) | ImageLumaA8(_) | ImageLumaA16(_)) => ImageLuma8(img.to_luma8()),
        (ImageFormat::Jpeg, _) => ImageRgb8(img.to_rgb8()),
        (_, ImageRgb32F(_)) => ImageRgb16(img.to_rgb16()),
        (_, ImageRgba32F(_)) => ImageRgba16(img.to_rgba16()),
        _ => img.clone(),
    }
}

/// Results written to temporary files in their target folders as they come,
/// renamed into place by `commit` only when all are there. Dropped without
/// `commit` (an error, Ctrl-C), the temporary files are deleted: nothing is left.
#[derive(Default)]
pub struct Staged {
    temps: Vec<(tempfile::NamedTempFile, PathBuf)>,
}

/// The temporary files of every `Staged` alive, for a second Ctrl-C: it ends
/// the process at once, and `exit` runs no destructors.
static PENDING: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

fn pending() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    PENDING.lock().unwrap_or_else(|p| p.into_inner())
}

/// Deletes the temporary files of results not yet committed (before `exit`).
pub fn discard_pending() {
    for p in pending().drain(..) {
        let _ = std::fs::remove_file(p);
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        let mut p = pending();
        p.retain(|q| !self.temps.iter().any(|(t, _)| t.path() == q));
    }
}

/// Temporary results are named `.pie-XXXXXX.tmp` and locked while their
/// writer lives; one that nobody holds is left by a killed run.
const TEMP_PREFIX: &str = ".pie-";
const TEMP_SUFFIX: &str = ".tmp";

/// Deletes in `dir` the temporary results of runs that were killed (no live
/// process holds their lock). Only pie's own names, only regular files.
pub fn remove_stale_temps(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for ent in rd.filter_map(|e| e.ok()) {
        let name = ent.file_name().to_string_lossy().into_owned();
        let ours = name.starts_with(TEMP_PREFIX)
            && name.ends_with(TEMP_SUFFIX)
            && name.len() == TEMP_PREFIX.len() + 6 + TEMP_SUFFIX.len();
        if !ours || !ent.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let Ok(f) = pie::safefs::open_regular(&ent.path()) else { continue };
        if pie::safefs::try_lock(&f) {
            let _ = std::fs::remove_file(ent.path());
        }
    }
}

impl Staged {
    pub fn write(&mut self, path: &Path, img: &DynamicImage) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let f = format_for(path)?;
        let dir = folder_of(path);
        remove_stale_temps(&dir);
        // A file that is replaced keeps its mode; a new one gets 0666 less the
        // umask, as any file the user writes (tempfile's 0600 would hide it).
        let mode =
            std::fs::metadata(path).ok().filter(|m| m.is_file()).map(|m| m.permissions().mode() & 0o7777);
        let tmp = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .suffix(TEMP_SUFFIX)
            .rand_bytes(6)
            .permissions(PermissionsExt::from_mode(mode.unwrap_or(0o666)))
            .tempfile_in(&dir)
            .map_err(|e| Error::io("cannot write", path, without_temp_name(e)))?;
        pie::safefs::try_lock(tmp.as_file());
        if let Some(m) = mode {
            // The umask applied at creation; the replaced file's mode is what counts.
            std::fs::set_permissions(tmp.path(), PermissionsExt::from_mode(m))
                .map_err(|e| Error::io("cannot write", path, e))?;
        }
        pending().push(tmp.path().to_path_buf());
        {
            let mut w = BufWriter::new(tmp.as_file());
            storable(img, f)
                .write_to(&mut w, f)
                .map_err(|e| Error::internal(format!("cannot encode {}: {e}", path.display())))?;
            w.flush().map_err(|e| Error::io("cannot write", path, e))?;
        }
        tmp.as_file().sync_all().map_err(|e| Error::io("cannot write", path, e))?;
        self.temps.push((tmp, path.to_path_buf()));
        Ok(())
    }

    pub fn commit(mut self) -> Result<()> {
        for (tmp, path) in std::mem::take(&mut self.temps) {
            pending().retain(|q| q != tmp.path());
            tmp.persist(&path).map_err(|e| Error::io("cannot write", &path, e.error))?;
        }
        Ok(())
    }
}
