//! Loop devices backed by a file in a temporary directory, optionally formatted and mounted.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::mount::{MntFlags, MsFlags, mount, umount2};

use super::{retry, unique_name};

// From <linux/loop.h>.
const LOOP_SET_FD: libc::c_ulong = 0x4C00;
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LOOP_SET_STATUS64: libc::c_ulong = 0x4C04;
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_FLAGS_PARTSCAN: u32 = 8;
// From <linux/fs.h> and <linux/blkpg.h>.
const BLKPG: libc::c_ulong = 0x1269;
const BLKPG_ADD_PARTITION: libc::c_int = 1;

/// `struct blkpg_ioctl_arg`.
#[repr(C)]
struct BlkpgIoctlArg {
    op: libc::c_int,
    flags: libc::c_int,
    datalen: libc::c_int,
    data: *mut libc::c_void,
}

/// `struct blkpg_partition`.
#[repr(C)]
struct BlkpgPartition {
    start: i64,
    length: i64,
    pno: libc::c_int,
    devname: [u8; 64],
    volname: [u8; 64],
}
const LO_NAME_SIZE: usize = 64;

/// `struct loop_info64`.
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// A loop device attached (through the `LOOP_CTL_GET_FREE` / `LOOP_SET_FD` ioctls, so no
/// `losetup` is needed) to a sparse file in a temporary directory `chaos-t-<pid>-<n>`. Drop
/// unmounts it if mounted, detaches it and removes the directory.
///
/// The device is attached with autoclear: if the test process dies, the kernel detaches it once
/// it is no longer open or mounted.
#[derive(Debug)]
pub struct LoopDevice {
    dir: PathBuf,
    backing: PathBuf,
    device: PathBuf,
    dev_file: Option<File>,
    mount_point: Option<PathBuf>,
}

impl LoopDevice {
    /// Attaches a loop device to a new sparse file of `size` bytes.
    pub fn new(size: u64) -> io::Result<Self> {
        let dir = std::env::temp_dir().join(unique_name());
        std::fs::create_dir(&dir)?;
        let mut dev = LoopDevice {
            backing: dir.join("backing.img"),
            dir,
            device: PathBuf::new(),
            dev_file: None,
            mount_point: None,
        };
        File::create(&dev.backing)?.set_len(size)?;
        dev.attach(LO_FLAGS_AUTOCLEAR)?;
        Ok(dev)
    }

    /// A loop device of `size` bytes (at least 2 MiB) holding an MBR partition table with one
    /// Linux partition from 1 MiB to the end, attached with partition scanning so that the
    /// kernel shows the partition (`loopNp1`). Written here, so no `sfdisk` is needed; where the
    /// kernel reads no MBR (no `CONFIG_MSDOS_PARTITION`), the partition is added with the
    /// `BLKPG` ioctl, as `addpart` does.
    pub fn with_partition(size: u64) -> io::Result<Self> {
        use std::io::{Seek, SeekFrom, Write};
        if size < 2 << 20 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a partitioned loop device needs at least 2 MiB",
            ));
        }
        let dir = std::env::temp_dir().join(unique_name());
        std::fs::create_dir(&dir)?;
        let mut dev = LoopDevice {
            backing: dir.join("backing.img"),
            dir,
            device: PathBuf::new(),
            dev_file: None,
            mount_point: None,
        };
        let mut file = File::create(&dev.backing)?;
        file.set_len(size)?;
        let (start, sectors) = (2048u32, (size / 512) as u32 - 2048);
        // One partition entry: not bootable, CHS fields unused (0xfe 0xff 0xff past 8 GiB is
        // customary; the kernel reads only the LBA fields), type 0x83, start and length in
        // 512-byte sectors.
        let mut entry = [0u8; 16];
        entry[1..4].copy_from_slice(&[0xfe, 0xff, 0xff]);
        entry[4] = 0x83;
        entry[5..8].copy_from_slice(&[0xfe, 0xff, 0xff]);
        entry[8..12].copy_from_slice(&start.to_le_bytes());
        entry[12..16].copy_from_slice(&sectors.to_le_bytes());
        file.seek(SeekFrom::Start(446))?;
        file.write_all(&entry)?;
        file.seek(SeekFrom::Start(510))?;
        file.write_all(&[0x55, 0xaa])?;
        file.sync_all()?;
        drop(file);
        dev.attach(LO_FLAGS_AUTOCLEAR | LO_FLAGS_PARTSCAN)?;
        let sysfs = PathBuf::from(format!("/sys/block/{0}/{0}p1", dev.name()));
        let scanned = retry(
            Duration::from_millis(500),
            Duration::from_millis(20),
            || sysfs.exists().then_some(()).ok_or(()),
        );
        if scanned.is_err() {
            dev.add_partition(1, u64::from(start) * 512, u64::from(sectors) * 512)?;
        }
        Ok(dev)
    }

    /// Adds partition `pno` (bytes `start..start + length`) with `BLKPG_ADD_PARTITION`.
    fn add_partition(&self, pno: i32, start: u64, length: u64) -> io::Result<()> {
        let mut part = BlkpgPartition {
            start: start as i64,
            length: length as i64,
            pno,
            devname: [0; 64],
            volname: [0; 64],
        };
        let arg = BlkpgIoctlArg {
            op: BLKPG_ADD_PARTITION,
            flags: 0,
            datalen: std::mem::size_of::<BlkpgPartition>() as libc::c_int,
            data: (&mut part as *mut BlkpgPartition).cast(),
        };
        let fd = self.dev_file.as_ref().map(|f| f.as_raw_fd()).unwrap_or(-1);
        // SAFETY: BLKPG reads a blkpg_ioctl_arg pointing at a blkpg_partition, both ours and
        // alive for the call.
        if unsafe { libc::ioctl(fd, BLKPG as _, &arg as *const BlkpgIoctlArg) } < 0 {
            let e = io::Error::last_os_error();
            // EBUSY: the partition scan added it meanwhile.
            if e.raw_os_error() != Some(libc::EBUSY) {
                return Err(io::Error::new(
                    e.kind(),
                    format!("BLKPG add partition: {e}"),
                ));
            }
        }
        Ok(())
    }

    /// `(major, minor)` of partition `n` (from 1) as sysfs shows it, waiting up to 2 s for the
    /// kernel's partition scan.
    pub fn partition_major_minor(&self, n: u32) -> io::Result<(u32, u32)> {
        let file = PathBuf::from(format!("/sys/block/{0}/{0}p{n}/dev", self.name()));
        let text = retry(Duration::from_secs(2), Duration::from_millis(20), || {
            std::fs::read_to_string(&file)
        })?;
        let parse = |s: Option<&str>| {
            s.and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| io::Error::other(format!("{}: {text:?}", file.display())))
        };
        let mut parts = text.split(':');
        Ok((parse(parts.next())?, parse(parts.next())?))
    }

    /// A loop device of `size` bytes formatted ext4 and mounted on a temporary directory. Fails
    /// with [`io::ErrorKind::NotFound`] where `mkfs.ext4` is absent (e.g. a busybox VM).
    pub fn with_ext4(size: u64) -> io::Result<Self> {
        let mut dev = Self::new(size)?;
        dev.format_ext4()?;
        dev.mount("ext4")?;
        Ok(dev)
    }

    /// A loop device of `size` bytes formatted ext4 with extra `mkfs.ext4` options and mounted:
    /// e.g. `["-m", "5"]` for 5 % of the blocks reserved for root, `["-O", "^extent,^64bit"]`
    /// for block-mapped files (no `fallocate`). Fails like [`LoopDevice::with_ext4`].
    pub fn with_ext4_options(size: u64, options: &[&str]) -> io::Result<Self> {
        let mut dev = Self::new(size)?;
        dev.format_ext4_with(options)?;
        dev.mount("ext4")?;
        Ok(dev)
    }

    fn attach(&mut self, flags: u32) -> io::Result<()> {
        let ctl = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/loop-control")?;
        let backing = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.backing)?;
        // Another process may take the free device between the two ioctls: try again.
        let (device, file) = retry(Duration::from_secs(5), Duration::from_millis(20), || {
            // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
            let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE as _) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let device = PathBuf::from(format!("/dev/loop{n}"));
            ensure_node(&device, n as u32)?;
            let file = OpenOptions::new().read(true).write(true).open(&device)?;
            // SAFETY: LOOP_SET_FD takes a file descriptor by value.
            if unsafe { libc::ioctl(file.as_raw_fd(), LOOP_SET_FD as _, backing.as_raw_fd()) } < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok((device, file))
        })?;
        self.device = device;
        self.dev_file = Some(file);
        // SAFETY: all-zero is a valid loop_info64.
        let mut info: LoopInfo64 = unsafe { std::mem::zeroed() };
        info.lo_flags = flags;
        let name = self.backing.as_os_str().as_encoded_bytes();
        let len = name.len().min(LO_NAME_SIZE - 1);
        info.lo_file_name[..len].copy_from_slice(&name[..len]);
        let fd = self.dev_file.as_ref().map(|f| f.as_raw_fd()).unwrap_or(-1);
        // SAFETY: LOOP_SET_STATUS64 reads a loop_info64 we own.
        if unsafe { libc::ioctl(fd, LOOP_SET_STATUS64 as _, &info as *const LoopInfo64) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Formats the device ext4 with `mkfs.ext4 -q -F`.
    pub fn format_ext4(&self) -> io::Result<()> {
        self.format_ext4_with(&[])
    }

    /// Formats the device ext4 with `mkfs.ext4 -q -F` and `options`.
    pub fn format_ext4_with(&self, options: &[&str]) -> io::Result<()> {
        let mut cmd = crate::cmd::command("mkfs.ext4", &["-q", "-F"]);
        cmd.args(options).arg(&self.device);
        crate::cmd::run(&mut cmd).map(drop)
    }

    /// Mounts the device (a filesystem of type `fstype`) on `<tempdir>/mnt` and returns that path.
    pub fn mount(&mut self, fstype: &str) -> io::Result<&Path> {
        let mnt = self.dir.join("mnt");
        std::fs::create_dir_all(&mnt)?;
        mount(
            Some(&self.device),
            &mnt,
            Some(fstype),
            MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|e| {
            io::Error::other(format!(
                "mount {} on {}: {e}",
                self.device.display(),
                mnt.display()
            ))
        })?;
        Ok(self.mount_point.insert(mnt))
    }

    /// The device node, e.g. `/dev/loop3`.
    pub fn device(&self) -> &Path {
        &self.device
    }

    /// The backing file.
    pub fn backing_file(&self) -> &Path {
        &self.backing
    }

    /// Where the filesystem is mounted, if it is.
    pub fn mount_point(&self) -> Option<&Path> {
        self.mount_point.as_deref()
    }

    /// The device's `(major, minor)` numbers, as cgroup I/O limits name it (`MAJ:MIN`).
    pub fn major_minor(&self) -> io::Result<(u32, u32)> {
        let rdev = std::fs::metadata(&self.device)?.rdev();
        Ok((libc::major(rdev), libc::minor(rdev)))
    }

    /// The block device name, e.g. `loop3` (its directory under `/sys/block`).
    pub fn name(&self) -> &str {
        self.device
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        if let Some(mnt) = self.mount_point.take() {
            unmount(&mnt);
        }
        if let Some(file) = self.dev_file.take() {
            // SAFETY: LOOP_CLR_FD takes no argument.
            unsafe { libc::ioctl(file.as_raw_fd(), LOOP_CLR_FD as _) };
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Unmounts `path`, lazily if it stays busy.
pub(crate) fn unmount(path: &Path) {
    let done = retry(Duration::from_secs(1), Duration::from_millis(20), || {
        umount2(path, MntFlags::empty())
    });
    if done.is_err() {
        let _ = umount2(path, MntFlags::MNT_DETACH);
    }
}

/// Detaches loop device `device` if it is attached.
pub(crate) fn detach(device: &Path) {
    if let Ok(file) = OpenOptions::new().read(true).open(device) {
        // SAFETY: LOOP_CLR_FD takes no argument.
        unsafe { libc::ioctl(file.as_raw_fd(), LOOP_CLR_FD as _) };
    }
}

/// Makes `/dev/loopN` where no devtmpfs made it.
fn ensure_node(device: &Path, n: u32) -> io::Result<()> {
    match std::fs::metadata(device) {
        Ok(m) if m.file_type().is_block_device() => Ok(()),
        Ok(_) => Err(io::Error::other(format!(
            "{} is not a block device",
            device.display()
        ))),
        Err(_) => nix::sys::stat::mknod(
            device,
            nix::sys::stat::SFlag::S_IFBLK,
            nix::sys::stat::Mode::from_bits_truncate(0o660),
            libc::makedev(7, n),
        )
        .map_err(io::Error::from),
    }
}
