//! Many map writes in one bpftool process (`bpftool batch file`): a writer
//! that is not mapsync, thousands of syscalls in a few milliseconds.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;

/// The commands of one `bpftool batch file` run.
///
/// ```no_run
/// # fn example(pin: &std::path::Path) -> anyhow::Result<()> {
/// let mut batch = mapsync_test_support::Batch::default();
/// batch.update(pin, &1u32.to_ne_bytes(), &[7; 8]);
/// batch.delete(pin, &2u32.to_ne_bytes());
/// batch.run()?;
/// # Ok(()) }
/// ```
#[derive(Debug, Default, Clone)]
pub struct Batch {
    commands: String,
    len: usize,
}

impl Batch {
    /// Adds `map update pinned PIN key hex .. value hex ..`.
    pub fn update(&mut self, pin: &Path, key: &[u8], value: &[u8]) -> &mut Self {
        let _ = writeln!(
            self.commands,
            "map update pinned {} key hex {} value hex {}",
            pin.display(),
            spaced_hex(key),
            spaced_hex(value)
        );
        self.len += 1;
        self
    }

    /// Adds `map delete pinned PIN key hex ..`.
    pub fn delete(&mut self, pin: &Path, key: &[u8]) -> &mut Self {
        let _ = writeln!(
            self.commands,
            "map delete pinned {} key hex {}",
            pin.display(),
            spaced_hex(key)
        );
        self.len += 1;
        self
    }

    /// The number of commands added.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no command was added.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Runs the commands in one bpftool process (which stops at the first
    /// failing one).
    pub fn run(&self) -> anyhow::Result<()> {
        let file = tempfile::NamedTempFile::new().context("create the batch file")?;
        std::fs::write(file.path(), &self.commands).context("write the batch file")?;
        let path = file.path().to_str().context("a UTF-8 temp path")?;
        crate::bpftool(&["batch", "file", path]).map(drop)
    }
}

/// Bytes as bpftool's `hex` arguments take them: `0a 00 00 01`.
fn spaced_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_bpftool_lines_with_spaced_hex() {
        let mut batch = Batch::default();
        assert!(batch.is_empty());
        batch
            .update(Path::new("/sys/fs/bpf/m"), &[10, 0, 0, 1], &[0xff])
            .delete(Path::new("/sys/fs/bpf/m"), &[2]);
        assert_eq!(
            batch.commands,
            "map update pinned /sys/fs/bpf/m key hex 0a 00 00 01 value hex ff\n\
             map delete pinned /sys/fs/bpf/m key hex 02\n"
        );
        assert_eq!(batch.len(), 2);
    }
}
