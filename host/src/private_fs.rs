//! Files only Remedy's user may read or write: the store (run records,
//! audit, alerts) and the compiled-code cache (native code the host maps
//! and runs). Directories are made 0700 and files 0600 whatever the umask;
//! a cache entry is trusted only if nobody else could have written it.

use std::io;
use std::path::Path;

#[cfg(unix)]
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};

/// Creates `dir` (and parents) and makes it 0700.
pub fn create_dir(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    Ok(())
}

/// Makes an existing file 0600 (no-op when it does not exist).
pub fn restrict_file(file: &Path) -> io::Result<()> {
    #[cfg(unix)]
    match std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600)) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        other => other?,
    }
    Ok(())
}

/// Writes `bytes` to a new file `path`, created 0600.
pub fn write_new(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    opts.mode(0o600);
    io::Write::write_all(&mut opts.open(path)?, bytes)
}

/// Whether `file` in `dir` can only have been written by this process's
/// user: both owned by it, neither writable by group or others. Anything
/// else is refused (a cache entry is code the host will run).
pub fn written_only_by_us(dir: &Path, file: &Path) -> Result<(), String> {
    #[cfg(unix)]
    {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        for p in [dir, file] {
            let m = std::fs::symlink_metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
            if m.file_type().is_symlink() {
                return Err(format!("{} is a symlink", p.display()));
            }
            if m.uid() != me {
                return Err(format!(
                    "{} is owned by uid {}, not {me}",
                    p.display(),
                    m.uid()
                ));
            }
            if m.mode() & 0o022 != 0 {
                return Err(format!(
                    "{} is writable by group or others (mode {:o})",
                    p.display(),
                    m.mode() & 0o777
                ));
            }
        }
    }
    let _ = (dir, file);
    Ok(())
}
