//! Reading files pie did not write itself (the user's images, a library a
//! stranger may have prepared) without hanging or exhausting memory: only
//! regular files are read, a FIFO or device never blocks the open, and every
//! read is bounded before anything is allocated.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Manifests, checkpoint metadata: far more than pie ever writes.
pub const MAX_JSON_BYTES: u64 = 1 << 20;

/// The largest image pie decodes: 250 megapixels (e.g. 20000 x 12500), and
/// at most 32768 pixels on a side; checked from the header, before decoding.
pub const MAX_IMAGE_PIXELS: u64 = 250_000_000;
pub const MAX_IMAGE_SIDE: u32 = 32_768;
/// What the decoder may allocate beyond the pixels themselves.
const MAX_DECODER_ALLOC: u64 = 2 << 30;

fn not_regular(kind: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("is not a regular file (it is {kind})"))
}

/// Opens `path` for reading only if it is a regular file. The open itself
/// never blocks (a FIFO would wait for a writer forever otherwise).
pub fn open_regular(path: &Path) -> io::Result<File> {
    let f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path)?;
    let ft = f.metadata()?.file_type();
    if ft.is_file() {
        return Ok(f);
    }
    use std::os::unix::fs::FileTypeExt;
    Err(not_regular(if ft.is_dir() {
        "a folder"
    } else if ft.is_fifo() {
        "a named pipe"
    } else if ft.is_socket() {
        "a socket"
    } else {
        "a device"
    }))
}

/// The whole of a regular file of at most `max` bytes.
pub fn read_bounded(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let f = open_regular(path)?;
    let len = f.metadata()?.len();
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("is too large ({len} bytes; at most {max})"),
        ));
    }
    let mut out = Vec::with_capacity(len as usize);
    // `take`: a file that grows while it is read still stops at the bound.
    f.take(max + 1).read_to_end(&mut out)?;
    if out.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("grew past {max} bytes while being read"),
        ));
    }
    Ok(out)
}

/// An exclusive lock on `f` if no other process holds one, without waiting;
/// the lock ends with the process, however it ends.
pub fn try_lock(f: &File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor the caller keeps open for the call.
    unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

/// Whether `path` is a folder itself, not a link to one.
pub fn is_real_dir(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
}

/// The decoder limits pie applies to every image it reads.
pub fn image_limits() -> image::Limits {
    let mut l = image::Limits::default();
    l.max_image_width = Some(MAX_IMAGE_SIDE);
    l.max_image_height = Some(MAX_IMAGE_SIDE);
    l.max_alloc = Some(MAX_DECODER_ALLOC);
    l
}

/// Refuses an image whose header claims more than pie decodes.
pub fn check_image_size(w: u32, h: u32) -> std::result::Result<(), String> {
    let px = u64::from(w) * u64::from(h);
    if w > MAX_IMAGE_SIDE || h > MAX_IMAGE_SIDE || px > MAX_IMAGE_PIXELS {
        return Err(format!(
            "is {w}x{h} pixels ({:.0} megapixels): pie reads images of at most {} megapixels and {MAX_IMAGE_SIDE} pixels a side; scale it down first",
            px as f64 / 1e6,
            MAX_IMAGE_PIXELS / 1_000_000
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifos_folders_and_big_files_are_refused_without_blocking() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("bundle.json");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a plain libc call on a path we own.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = read_bounded(&fifo, 10).unwrap_err();
        assert!(e.to_string().contains("named pipe"), "{e}");
        let e = read_bounded(d.path(), 10).unwrap_err();
        assert!(e.to_string().contains("folder"), "{e}");
        let big = d.path().join("big.json");
        std::fs::write(&big, vec![b' '; 11]).unwrap();
        assert!(read_bounded(&big, 10).unwrap_err().to_string().contains("too large (11 bytes"));
        assert_eq!(read_bounded(&big, 11).unwrap().len(), 11);
    }

    #[test]
    fn image_sizes_are_bounded_by_side_and_area() {
        assert!(check_image_size(20_000, 12_500).is_ok());
        assert!(check_image_size(65_000, 65_000).unwrap_err().contains("65000x65000"));
        assert!(check_image_size(40_000, 10).is_err());
        assert!(check_image_size(30_000, 30_000).is_err());
    }
}
