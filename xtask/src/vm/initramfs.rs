//! Writing the VM's initramfs: a newc cpio archive (uncompressed: TCG is slow at
//! decompressing) holding busybox, the test binaries with their shared libraries, the tools the
//! tests call and, per kernel, the modules.
//!
//! The kernel accepts several archives concatenated, so the big part shared by all kernels is
//! written once and each kernel's modules are appended to a copy.
use std::{
    collections::BTreeMap,
    fs::{self, File},
    io::{self, BufWriter, Write as _},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};
use cpio::newc::{self, ModeFileType};

use crate::cmd;

enum Source {
    Dir,
    File(PathBuf),
    Data(Vec<u8>),
    Symlink(String),
}

struct Entry {
    source: Source,
    mode: u32,
}

/// An archive being assembled; paths are absolute in the VM (`/bin/busybox`).
#[derive(Default)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
}

fn key(path: &str) -> String {
    path.trim_start_matches('/')
        .trim_end_matches('/')
        .to_owned()
}

impl Archive {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn contains(&self, path: &str) -> bool {
        self.entries.contains_key(&key(path))
    }

    pub fn dir(&mut self, path: &str) {
        self.insert(path, Source::Dir, 0o755);
    }

    /// Adds the host file `src` at `path`, keeping its permission bits.
    pub fn file(&mut self, path: &str, src: &Path) -> Result<()> {
        let meta = fs::metadata(src).with_context(|| format!("reading {}", src.display()))?;
        self.insert(
            path,
            Source::File(src.to_owned()),
            meta.permissions().mode() & 0o7777,
        );
        Ok(())
    }

    pub fn data(&mut self, path: &str, data: impl Into<Vec<u8>>, mode: u32) {
        self.insert(path, Source::Data(data.into()), mode);
    }

    pub fn symlink(&mut self, path: &str, target: &str) {
        self.insert(path, Source::Symlink(target.to_owned()), 0o777);
    }

    fn insert(&mut self, path: &str, source: Source, mode: u32) {
        let k = key(path);
        // Parent directories first; BTreeMap order then writes parents before children.
        let mut parent = Path::new(&k).parent();
        while let Some(p) = parent {
            let s = p.to_string_lossy().into_owned();
            if s.is_empty() {
                break;
            }
            self.entries.entry(s).or_insert(Entry {
                source: Source::Dir,
                mode: 0o755,
            });
            parent = p.parent();
        }
        self.entries.insert(k, Entry { source, mode });
    }

    /// Adds the executable `src` at `path` together with its ELF interpreter and shared
    /// libraries (found with `ldd`), each at the path the host resolves it to.
    pub fn executable(&mut self, path: &str, src: &Path) -> Result<()> {
        self.file(path, src)?;
        for lib in shared_libraries(src)? {
            let lib_path = lib.to_string_lossy().into_owned();
            if !self.contains(&lib_path) {
                let real = fs::canonicalize(&lib)?;
                self.file(&lib_path, &real)?;
            }
        }
        Ok(())
    }

    /// Writes the archive to `out`, appending to what `out` already holds if `append`.
    pub fn write(&self, out: &Path, append: bool) -> Result<()> {
        let file = fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(out)
            .with_context(|| format!("creating {}", out.display()))?;
        let mut w = BufWriter::new(file);
        for (ino, (name, entry)) in (1u32..).zip(&self.entries) {
            let builder = newc::Builder::new(name).ino(ino).mode(entry.mode);
            w = match &entry.source {
                Source::Dir => {
                    let builder = builder.set_mode_file_type(ModeFileType::Directory).nlink(2);
                    builder.write(w, 0).finish()?
                }
                Source::Data(data) => {
                    write_bytes(builder.set_mode_file_type(ModeFileType::Regular), w, data)?
                }
                Source::Symlink(target) => {
                    let builder = builder.set_mode_file_type(ModeFileType::Symlink);
                    write_bytes(builder, w, target.as_bytes())?
                }
                Source::File(src) => {
                    let mut f =
                        File::open(src).with_context(|| format!("opening {}", src.display()))?;
                    let len = u32::try_from(f.metadata()?.len())
                        .with_context(|| format!("{} is too large for cpio", src.display()))?;
                    let builder = builder.set_mode_file_type(ModeFileType::Regular);
                    let mut writer = builder.write(w, len);
                    io::copy(&mut f, &mut writer)
                        .with_context(|| format!("archiving {}", src.display()))?;
                    writer.finish()?
                }
            };
        }
        let mut w = newc::trailer(w)?;
        w.flush()?;
        Ok(())
    }
}

fn write_bytes(builder: newc::Builder, w: BufWriter<File>, data: &[u8]) -> Result<BufWriter<File>> {
    let mut writer = builder.write(w, u32::try_from(data.len())?);
    writer.write_all(data)?;
    Ok(writer.finish()?)
}

/// The interpreter and libraries `ldd` reports for `bin`; none for a static binary.
fn shared_libraries(bin: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .context("running ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        if text.contains("not a dynamic executable")
            || String::from_utf8_lossy(&out.stderr).contains("not a dynamic executable")
        {
            return Ok(Vec::new());
        }
        bail!(
            "ldd {} failed: {}",
            bin.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut libs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.contains("not found") {
            bail!("{}: library {line}", bin.display());
        }
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
        // "/lib64/ld-linux-x86-64.so.2 (0x...)"; "linux-vdso.so.1 (0x...)" has no file.
        let path = match line.split_once(" => ") {
            Some((_, rest)) => rest.split(" (").next().unwrap_or(""),
            None => line.split(" (").next().unwrap_or(""),
        };
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

/// Copies `src` to `dst` without its debug info (`objcopy --strip-debug`): debug builds of the
/// test binaries are mostly DWARF, and the initramfs lives in the VM's memory. Symbols stay, so
/// backtraces still name functions.
pub fn strip_debug(src: &Path, dst: &Path) -> Result<()> {
    if let Some(parent) = dst.parent() {
        fs::create_dir_all(parent)?;
    }
    let stripped = cmd::have("objcopy")
        && Command::new("objcopy")
            .arg("--strip-debug")
            .arg(src)
            .arg(dst)
            .status()
            .is_ok_and(|s| s.success());
    if !stripped {
        fs::copy(src, dst)
            .with_context(|| format!("copying {} to {}", src.display(), dst.display()))?;
    }
    Ok(())
}
