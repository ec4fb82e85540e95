//! Atomic output: every file cortexmap writes appears complete or not at all.
//!
//! Data go to a hidden temporary file in the destination's folder, are flushed to
//! disk, and the temporary is renamed over the destination (a rename within one
//! folder is atomic on POSIX file systems). A writer dropped before `commit` removes
//! its temporary, so a failed or interrupted run leaves no half-written file.

use crate::error::{Error, Result};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// A file being written atomically; call [`AtomicFile::commit`] to publish it.
pub struct AtomicFile {
    dest: PathBuf,
    tmp: PathBuf,
    writer: Option<BufWriter<File>>,
}

/// The temporary path used while `dest` is being written.
pub fn temp_path_for(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into());
    let tmp_name = format!(".{name}.tmp-{}", std::process::id());
    match dest.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join(tmp_name),
        _ => PathBuf::from(tmp_name),
    }
}

impl AtomicFile {
    /// Start writing `dest`; its folder must exist.
    pub fn create(dest: impl AsRef<Path>) -> Result<Self> {
        let dest = dest.as_ref().to_path_buf();
        let tmp = temp_path_for(&dest);
        let file = File::create(&tmp).map_err(|e| Error::output(&dest, e))?;
        Ok(AtomicFile {
            dest,
            tmp,
            writer: Some(BufWriter::with_capacity(1 << 20, file)),
        })
    }

    /// The final destination path.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// The buffered writer for the temporary file.
    pub fn writer(&mut self) -> &mut BufWriter<File> {
        self.writer
            .as_mut()
            .expect("AtomicFile writer used after commit")
    }

    /// Flush, sync and rename the temporary over the destination.
    pub fn commit(mut self) -> Result<()> {
        let writer = self.writer.take().expect("AtomicFile committed twice");
        let file = writer
            .into_inner()
            .map_err(|e| Error::output(&self.dest, e.error()))?;
        file.sync_all().map_err(|e| Error::output(&self.dest, e))?;
        drop(file);
        std::fs::rename(&self.tmp, &self.dest).map_err(|e| Error::output(&self.dest, e))
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.writer().write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.writer().flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.writer.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Write `bytes` to `dest` atomically.
pub fn write_bytes(dest: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    let mut f = AtomicFile::create(dest)?;
    f.write_all(bytes).map_err(|e| Error::output(f.dest(), e))?;
    f.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_publishes_and_drop_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("a.txt");
        write_bytes(&dest, b"hello").unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"hello");

        let dest2 = dir.path().join("b.txt");
        {
            let mut f = AtomicFile::create(&dest2).unwrap();
            f.write_all(b"partial").unwrap();
            // dropped without commit
        }
        assert!(!dest2.exists());
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "only a.txt remains");
    }
}
