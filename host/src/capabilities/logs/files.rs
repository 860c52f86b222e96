//! Log sources on disk. Each file's directory is opened through cap-std
//! for each read, read-only, and the file is opened by its name inside it:
//! nothing outside that directory is reachable, whatever the name. A tail
//! reads backwards from the end, at most [`MAX_BYTES`]; when the file holds
//! fewer lines than asked (it was just rotated), the rest comes from its
//! predecessor, `NAME.1` (logrotate's and most loggers' naming).

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use cap_std::fs::Dir;

use super::backend::{LogsBackend, MAX_BYTES, MAX_LINE, MAX_LINES};
use crate::backends::{BackendError, BackendResult};

/// A named log file: its directory and its name in it.
#[derive(Debug, Clone)]
struct Source {
    dir: PathBuf,
    file: String,
}

pub struct FileLogs {
    sources: BTreeMap<String, Source>,
}

impl FileLogs {
    /// `sources`: name → absolute path of the file. `Err` names the source
    /// whose path is not an absolute file path.
    pub fn new(sources: &BTreeMap<String, PathBuf>) -> Result<FileLogs, String> {
        let mut out = BTreeMap::new();
        for (name, path) in sources {
            let file = path.file_name().and_then(|f| f.to_str());
            let dir = path.parent().filter(|d| d.is_absolute());
            let (Some(file), Some(dir)) = (file, dir) else {
                return Err(format!(
                    "backends.logs.{name}.path: `{}` is not an absolute path to a file",
                    path.display()
                ));
            };
            out.insert(
                name.clone(),
                Source {
                    dir: dir.to_path_buf(),
                    file: file.to_string(),
                },
            );
        }
        Ok(FileLogs { sources: out })
    }
}

#[async_trait]
impl LogsBackend for FileLogs {
    fn has_source(&self, source: &str) -> bool {
        self.sources.contains_key(source)
    }

    async fn tail(&self, source: &str, lines: usize) -> BackendResult<Vec<String>> {
        let Some(s) = self.sources.get(source).cloned() else {
            return Err(BackendError::Invalid(format!("no log source `{source}`")));
        };
        let want = lines.min(MAX_LINES);
        tokio::task::spawn_blocking(move || read_tail(&s, want))
            .await
            .map_err(|e| BackendError::Failed(format!("reading a log: {e}")))?
    }
}

fn read_tail(s: &Source, want: usize) -> BackendResult<Vec<String>> {
    let unreadable = |what: &Path, e: std::io::Error| {
        BackendError::Unavailable(format!("cannot read {}: {e}", what.display()))
    };
    let dir = Dir::open_ambient_dir(&s.dir, cap_std::ambient_authority())
        .map_err(|e| unreadable(&s.dir, e))?;
    let path = s.dir.join(&s.file);
    let mut file = dir.open(&s.file).map_err(|e| unreadable(&path, e))?;
    let (mut lines, whole, used) =
        tail_of(&mut file, want, MAX_BYTES).map_err(|e| unreadable(&path, e))?;
    if lines.len() < want && whole {
        // Rotated a moment ago: the rest of the tail is in the predecessor.
        let previous = format!("{}.1", s.file);
        if let Ok(mut f) = dir.open(&previous) {
            let budget = MAX_BYTES.saturating_sub(used);
            if let Ok((mut older, _, _)) = tail_of(&mut f, want - lines.len(), budget) {
                older.append(&mut lines);
                lines = older;
            }
        }
    }
    Ok(lines)
}

/// The last `want` lines of `f` reading at most `budget` bytes from its
/// end; whether the whole file was read, and how many bytes were.
fn tail_of(
    f: &mut (impl Read + Seek),
    want: usize,
    budget: u64,
) -> std::io::Result<(Vec<String>, bool, u64)> {
    let len = f.seek(SeekFrom::End(0))?;
    let start = len.saturating_sub(budget);
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::with_capacity((len - start) as usize);
    f.take(len - start).read_to_end(&mut buf)?;
    let mut text: &[u8] = &buf;
    if start > 0 {
        // Started inside a line: it is not whole.
        match text.iter().position(|&b| b == b'\n') {
            Some(i) => text = &text[i + 1..],
            None => text = &[],
        }
    }
    let mut lines: Vec<String> = text
        .split(|&b| b == b'\n')
        .rev()
        .skip_while(|l| l.is_empty())
        .take(want)
        .map(|l| {
            let l = l.strip_suffix(b"\r").unwrap_or(l);
            let cut = &l[..l.len().min(MAX_LINE)];
            String::from_utf8_lossy(cut).into_owned()
        })
        .collect();
    lines.reverse();
    Ok((lines, start == 0, buf.len() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logs(dir: &Path) -> FileLogs {
        FileLogs::new(&BTreeMap::from([("app".to_string(), dir.join("app.log"))])).unwrap()
    }

    #[tokio::test]
    async fn a_tail_is_the_last_lines_oldest_first() {
        let d = tempfile::tempdir().unwrap();
        let text: String = (1..=50).map(|i| format!("line {i}\n")).collect();
        std::fs::write(d.path().join("app.log"), text).unwrap();
        let got = logs(d.path()).tail("app", 3).await.unwrap();
        assert_eq!(got, ["line 48", "line 49", "line 50"]);
    }

    #[tokio::test]
    async fn a_tail_across_a_rotation_reads_the_predecessor() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("app.log.1"), "old 1\nold 2\nold 3\n").unwrap();
        std::fs::write(d.path().join("app.log"), "new 1\n").unwrap();
        let got = logs(d.path()).tail("app", 3).await.unwrap();
        assert_eq!(got, ["old 2", "old 3", "new 1"]);
    }

    #[tokio::test]
    async fn a_huge_file_is_read_only_to_the_budget_and_long_lines_are_cut() {
        let d = tempfile::tempdir().unwrap();
        let mut f = std::fs::File::create(d.path().join("app.log")).unwrap();
        use std::io::Write;
        // 6 MiB of one line, then a short one: only the last 4 MiB are read,
        // the partial first line is dropped.
        f.write_all(&vec![b'x'; 6 * 1024 * 1024]).unwrap();
        f.write_all(b"\nlast\n").unwrap();
        drop(f);
        let got = logs(d.path()).tail("app", 10).await.unwrap();
        assert_eq!(got, ["last"]);
        std::fs::write(d.path().join("app.log"), "y".repeat(5000) + "\n").unwrap();
        let got = logs(d.path()).tail("app", 10).await.unwrap();
        assert_eq!(got[0].len(), MAX_LINE);
    }

    /// The configured directory is the most a read reaches: a log that is
    /// a symlink out of it (or a rotation that is) is not followed.
    #[tokio::test]
    async fn a_symlink_out_of_the_directory_is_not_followed() {
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "root:x:0:0\n").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), d.path().join("app.log"))
            .unwrap();
        let err = logs(d.path()).tail("app", 10).await.unwrap_err();
        assert!(
            matches!(&err, BackendError::Unavailable(m) if m.contains("app.log")),
            "{err:?}"
        );
        // A link inside the directory is followed.
        std::fs::write(d.path().join("real.log"), "inside\n").unwrap();
        std::fs::remove_file(d.path().join("app.log")).unwrap();
        std::os::unix::fs::symlink("real.log", d.path().join("app.log")).unwrap();
        assert_eq!(logs(d.path()).tail("app", 10).await.unwrap(), ["inside"]);
    }

    #[tokio::test]
    async fn a_missing_file_is_unavailable_naming_it_and_a_relative_path_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let err = logs(d.path()).tail("app", 10).await.unwrap_err();
        assert!(
            matches!(&err, BackendError::Unavailable(m) if m.contains("app.log")),
            "{err:?}"
        );
        let err = FileLogs::new(&BTreeMap::from([(
            "x".to_string(),
            PathBuf::from("app.log"),
        )]))
        .err()
        .unwrap();
        assert!(err.contains("backends.logs.x.path"), "{err}");
    }
}
