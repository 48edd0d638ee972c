//! The skip convention shared with the VM/native runner.
//!
//! A test that cannot run because the kernel (or the VM image) lacks something prints exactly one
//! line `CHAOS-SKIP <test name>: <reason>` to stdout and returns; the runner counts it as skipped.
//! The line bypasses libtest's capture (so it shows without `--nocapture`) and starts on a line of
//! its own.
//! Setting `CHAOS_NO_SKIP=1` turns every skip into a panic, for machines where everything is
//! expected to work.
//!
//! ```no_run
//! use bpf_tests::{skip_on_err, skip_unless};
//! fn my_test() {
//!     skip_unless!(bpf_tests::skip::require_root());
//!     let lo = skip_on_err!(bpf_tests::LoopDevice::with_ext4(64 << 20));
//!     # drop(lo);
//! }
//! ```

/// The marker the runner looks for at the start of a line.
pub const MARKER: &str = "CHAOS-SKIP";

/// Environment variable that turns skips into panics when set to `1`.
pub const NO_SKIP_ENV: &str = "CHAOS_NO_SKIP";

/// Skips the current test unless `$cond` (a `Result<(), impl Display>`) is `Ok`: on `Err(reason)`
/// prints `CHAOS-SKIP <test>: <reason>` and returns from the enclosing function. A second
/// argument gives the value to return, for tests that return something other than `()`.
#[macro_export]
macro_rules! skip_unless {
    ($cond:expr) => {
        $crate::skip_unless!($cond, ())
    };
    ($cond:expr, $ret:expr) => {
        if let ::core::result::Result::Err(reason) = $cond {
            fn __chaos_here() {}
            $crate::skip::report(
                &$crate::skip::test_name(::core::any::type_name_of_val(&__chaos_here)),
                &reason,
            );
            return $ret;
        }
    };
}

/// Evaluates `$e` (a `Result<T, impl Display>`): gives the `Ok` value, or skips the current test
/// with the error as reason (see [`skip_unless!`]).
#[macro_export]
macro_rules! skip_on_err {
    ($e:expr) => {
        $crate::skip_on_err!($e, ())
    };
    ($e:expr, $ret:expr) => {
        match $e {
            ::core::result::Result::Ok(v) => v,
            ::core::result::Result::Err(reason) => {
                fn __chaos_here() {}
                $crate::skip::report(
                    &$crate::skip::test_name(::core::any::type_name_of_val(&__chaos_here)),
                    &reason,
                );
                return $ret;
            }
        }
    };
}

/// The current test's name as libtest reports it (`module::test_fn`): the current thread's name,
/// which libtest sets to the test path, or else derived from `fallback_type_name`, the type name
/// of a function item nested in the test (`crate::module::test_fn::__chaos_here`).
pub fn test_name(fallback_type_name: &str) -> String {
    if let Some(name) = std::thread::current().name()
        && name != "main"
        && !name.is_empty()
    {
        return name.to_owned();
    }
    let parts: Vec<&str> = fallback_type_name
        .split("::")
        .filter(|p| !p.starts_with("{{") && *p != "__chaos_here")
        .collect();
    // Drop the crate name: libtest's names start below it.
    match parts.split_first() {
        Some((_, rest)) if !rest.is_empty() => rest.join("::"),
        _ => fallback_type_name.to_owned(),
    }
}

std::thread_local! {
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with skip lines (and `CHAOS_NO_SKIP` panics) suppressed on this thread: for testing
/// the macros without the runner counting the enclosing test as skipped.
#[doc(hidden)]
pub fn quietly<R>(f: impl FnOnce() -> R) -> R {
    QUIET.with(|q| q.set(true));
    let r = f();
    QUIET.with(|q| q.set(false));
    r
}

/// Prints the skip line for `test` (or panics when `CHAOS_NO_SKIP=1`). The line is written to
/// the process's stdout directly, bypassing libtest's output capture, so that the runner sees it
/// whether or not `--nocapture` is given.
pub fn report(test: &str, reason: &dyn std::fmt::Display) {
    if QUIET.with(|q| q.get()) {
        return;
    }
    let reason = reason.to_string().replace('\n', " ");
    if std::env::var(NO_SKIP_ENV).as_deref() == Ok("1") {
        panic!("{test} would be skipped but {NO_SKIP_ENV}=1: {reason}");
    }
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    // One write so that the line is not interleaved with other output. The leading newline ends
    // libtest's `test name ... ` (printed before the test runs with one thread), so the marker
    // starts its own line.
    let _ = out.write_all(format!("\n{MARKER} {test}: {reason}\n").as_bytes());
    let _ = out.flush();
}

/// `Ok` when running as root (effective uid 0).
pub fn require_root() -> Result<(), String> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err("needs root".into())
    }
}

/// `Ok` when `program` is on `PATH`.
pub fn require_command(program: &str) -> Result<(), String> {
    if crate::cmd::have(program) {
        Ok(())
    } else {
        Err(format!("`{program}` not found on PATH"))
    }
}

/// `Ok` when network namespaces can be made (root, `/proc/self/ns/net` and `ip` present).
pub fn require_netns() -> Result<(), String> {
    require_root()?;
    if !std::path::Path::new("/proc/self/ns/net").exists() {
        return Err("kernel lacks network namespaces (CONFIG_NET_NS)".into());
    }
    require_command("ip")
}

/// `Ok` when the bpf syscall works: a two-instruction socket filter loads.
pub fn require_bpf() -> Result<(), String> {
    require_root()?;
    crate::oracle::testing::load_socket_filter("bpf_tests_probe")
        .map(drop)
        .map_err(|e| format!("cannot load a BPF program: {e}"))
}

/// `Ok` when `/dev/loop-control` exists.
pub fn require_loop() -> Result<(), String> {
    require_root()?;
    if std::path::Path::new("/dev/loop-control").exists() {
        Ok(())
    } else {
        Err("no /dev/loop-control (CONFIG_BLK_DEV_LOOP)".into())
    }
}
