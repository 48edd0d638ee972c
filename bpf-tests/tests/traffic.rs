//! A drill's traffic generators through the real worker (`chaos __traffic-worker`, from
//! `$CHAOS_BIN`), against servers the tests run on 127.0.0.1: pacing to the rate, errors and
//! timeouts counted, the file load in a cgroup it makes (v2 and blkio) and removes, a command run
//! once reporting its exit, and nothing left behind after `stop` (worker, command, files,
//! cgroups), even when the worker was killed.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use bpf_tests::{
    chaos::Chaos,
    skip_on_err, skip_unless,
    world::{cgroup_v1_mount, cgroup2_mount, unique_name},
};
use chaos_user::experiment::{
    CommandLoad, FileLoad, HttpLoad, TcpLoad, Traffic,
    record::{Clock, Op},
    traffic::TrafficRun,
};

/// An HTTP/1.1 server answering every request with `status` after `delay`, on kept-alive
/// connections.
fn http_server(status: u16, delay: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { break };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut out = stream;
                loop {
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line.trim_end().is_empty() {
                            break;
                        }
                    }
                    std::thread::sleep(delay);
                    let answer = format!("HTTP/1.1 {status} X\r\ncontent-length: 2\r\n\r\nok");
                    if out.write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A TCP server that accepts and reads but never answers.
fn silent_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { break };
            std::thread::spawn(move || {
                let mut buf = [0u8; 64];
                let _ = s.read(&mut buf);
                std::thread::sleep(Duration::from_secs(5));
            });
        }
    });
    addr
}

fn chaos() -> Result<Chaos, String> {
    Chaos::from_env()
}

fn start(chaos: &Chaos, spec: &Traffic) -> TrafficRun {
    TrafficRun::start(spec, Clock::start(), chaos.bin())
        .unwrap_or_else(|e| panic!("starting {}: {e}", spec.name))
}

fn alive(pid: u32) -> bool {
    // A zombie is not alive: its state is Z.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit(')').next().map(|r| r.trim_start().to_owned()))
        .is_some_and(|r| !r.starts_with('Z'))
}

/// Waits (at most 30 s) until the run has finished `n` operations: under TCG on a busy host a
/// worker may be starved for a while, so counts are awaited, not expected after a fixed sleep.
fn wait_ops(run: &TrafficRun, n: usize) {
    let start = std::time::Instant::now();
    while run.log().ops().len() < n {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{} ops after 30 s, waiting for {n}",
            run.log().ops().len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn errors(ops: &[Op]) -> usize {
    ops.iter().filter(|o| !o.ok).count()
}

#[test]
fn http_load_holds_its_rate() {
    let chaos = skip_on_err!(chaos());
    let addr = http_server(200, Duration::ZERO);
    let spec = Traffic {
        name: "rate".into(),
        http: Some(HttpLoad {
            url: format!("http://{addr}/"),
            ..HttpLoad::default()
        }),
        rate: Some(50.0),
        concurrency: Some(4),
        ..Traffic::default()
    };
    let mut run = start(&chaos, &spec);
    assert_eq!((run.name(), run.kind()), ("rate", "http"));
    // Two seconds' worth of operations, then the rate over their own start times: paced on an
    // absolute schedule, they are never faster than asked; slower only if the worker starves
    // (TCG on a busy host).
    wait_ops(&run, 100);
    let ops = run.log().ops();
    let pid = run.pid();
    run.stop().unwrap();
    let span_s = (ops[99].start_us - ops[0].start_us) as f64 / 1e6;
    let rate = 99.0 / span_s;
    println!(
        "rate 50/s: 100 ops over {span_s:.2} s ({rate:.1}/s), {} errors",
        errors(&ops)
    );
    assert!(
        (20.0..=55.0).contains(&rate),
        "{rate:.1} ops/s at 50/s (100 ops over {span_s:.2} s)"
    );
    assert_eq!(errors(&ops), 0, "{:?}", run.log().last_error());
    assert!(!alive(pid), "worker {pid} outlived stop");
}

#[test]
fn failed_statuses_are_errors() {
    let chaos = skip_on_err!(chaos());
    let addr = http_server(503, Duration::ZERO);
    let spec = Traffic {
        name: "errors".into(),
        http: Some(HttpLoad {
            url: format!("http://{addr}/"),
            ..HttpLoad::default()
        }),
        rate: Some(100.0),
        ..Traffic::default()
    };
    let mut run = start(&chaos, &spec);
    wait_ops(&run, 50);
    run.stop().unwrap();
    let ops = run.log().ops();
    println!("503s: {} ops, {} errors", ops.len(), errors(&ops));
    assert!(ops.len() >= 50, "{} ops", ops.len());
    assert_eq!(errors(&ops), ops.len(), "error rate 100%");
    assert_eq!(run.log().last_error().as_deref(), Some("status 503"));
}

#[test]
fn slow_answers_time_out() {
    let chaos = skip_on_err!(chaos());
    let addr = silent_server();
    let spec = Traffic {
        name: "timeouts".into(),
        tcp: Some(TcpLoad {
            address: addr.to_string(),
            send: Some("hello\n".into()),
        }),
        concurrency: Some(2),
        timeout: Some("200ms".into()),
        ..Traffic::default()
    };
    let mut run = start(&chaos, &spec);
    std::thread::sleep(Duration::from_millis(1100));
    // Operations in flight right now: each worker waits on its silent server.
    let in_flight = run.log().in_flight().len();
    run.stop().unwrap();
    let ops = run.log().ops();
    println!(
        "silent server, timeout 200ms: {} ops, {} in flight at the look",
        ops.len(),
        in_flight
    );
    assert!(ops.len() >= 6, "{} ops", ops.len());
    for op in &ops {
        assert!(!op.ok);
        assert!(
            (195_000..400_000).contains(&op.latency_us),
            "an op took {} us",
            op.latency_us
        );
    }
    assert_eq!(
        run.log().last_error().as_deref(),
        Some("timed out after 200ms")
    );
}

/// The line of `/proc/PID/cgroup` for the v2 hierarchy (`0::`) or a v1 controller.
fn cgroup_of(pid: u32, controller: &str) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
        let ours = if controller.is_empty() {
            ctrls.is_empty()
        } else {
            ctrls.split(',').any(|c| c == controller)
        };
        ours.then(|| path.to_owned())
    })
}

/// A directory removed when the test ends, even by a panic.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let d = std::env::temp_dir().join(unique_name());
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }

    fn files(&self) -> Vec<String> {
        std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Removes `dirs` (deepest first) if a failed test left them.
struct CgroupSweep(Vec<PathBuf>);

impl Drop for CgroupSweep {
    fn drop(&mut self) {
        for d in &self.0 {
            if d.exists() {
                if let Ok(procs) = std::fs::read_to_string(d.join("cgroup.procs"))
                    && let Some(parent) = d.parent()
                {
                    for pid in procs.split_whitespace() {
                        let _ = std::fs::write(parent.join("cgroup.procs"), pid);
                    }
                }
                let _ = std::fs::remove_dir(d);
            }
        }
    }
}

#[test]
fn file_load_runs_in_the_cgroup_it_makes() {
    skip_unless!(bpf_tests::skip::require_root());
    let chaos = skip_on_err!(chaos());
    let v2 = skip_on_err!(cgroup2_mount().ok_or("no cgroup v2 mount"));
    let blkio = cgroup_v1_mount("blkio");
    let dir = TempDir::new();
    let top = unique_name();
    let name = format!("{top}/load");
    let mut made: Vec<PathBuf> = Vec::new();
    for root in std::iter::once(&v2).chain(blkio.as_ref()) {
        made.push(root.join(&name));
        made.push(root.join(&top));
    }
    let _sweep = CgroupSweep(made.clone());
    let spec = Traffic {
        name: "writes".into(),
        file: Some(FileLoad {
            path: dir.0.display().to_string(),
            block_size: Some("4k".into()),
            file_size: Some("1M".into()),
            fsync: Some(true),
        }),
        concurrency: Some(2),
        rate: Some(200.0),
        cgroup: Some(name.clone()),
        ..Traffic::default()
    };
    let mut run = start(&chaos, &spec);
    let pid = run.pid();
    wait_ops(&run, 100);
    assert_eq!(
        cgroup_of(pid, "").as_deref(),
        Some(format!("/{name}").as_str())
    );
    if blkio.is_some() {
        assert_eq!(
            cgroup_of(pid, "blkio").as_deref(),
            Some(format!("/{name}").as_str())
        );
    }
    let mut files = dir.files();
    files.sort();
    assert_eq!(
        files,
        vec![
            format!("chaos-traffic-writes-{pid}-0"),
            format!("chaos-traffic-writes-{pid}-1")
        ]
    );
    run.stop().unwrap();
    let ops = run.log().ops();
    println!(
        "file load at 200/s, 4k + fdatasync: {} ops, {} errors, cgroups {}",
        ops.len(),
        errors(&ops),
        made.iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    assert!(ops.len() >= 100, "{} ops", ops.len());
    assert_eq!(errors(&ops), 0, "{:?}", run.log().last_error());
    assert!(!alive(pid), "worker {pid} outlived stop");
    assert!(dir.files().is_empty(), "files left: {:?}", dir.files());
    for d in &made {
        assert!(!d.exists(), "{} left behind", d.display());
    }
}

#[test]
fn an_existing_cgroup_is_left_in_place() {
    skip_unless!(bpf_tests::skip::require_root());
    let chaos = skip_on_err!(chaos());
    let v2 = skip_on_err!(cgroup2_mount().ok_or("no cgroup v2 mount"));
    let name = unique_name();
    let existing = v2.join(&name);
    std::fs::create_dir(&existing).unwrap();
    let mut sweep = vec![existing.clone()];
    if let Some(b) = cgroup_v1_mount("blkio") {
        sweep.insert(0, b.join(&name));
    }
    let _sweep = CgroupSweep(sweep.clone());
    let addr = http_server(200, Duration::ZERO);
    let spec = Traffic {
        name: "kept".into(),
        http: Some(HttpLoad {
            url: format!("http://{addr}/"),
            ..HttpLoad::default()
        }),
        rate: Some(20.0),
        cgroup: Some(name.clone()),
        ..Traffic::default()
    };
    let mut run = start(&chaos, &spec);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        cgroup_of(run.pid(), "").as_deref(),
        Some(format!("/{name}").as_str())
    );
    run.stop().unwrap();
    assert!(existing.exists(), "a cgroup that existed was removed");
    // The blkio one was made for the run: gone.
    if sweep.len() == 2 {
        assert!(!sweep[0].exists(), "{} left behind", sweep[0].display());
    }
}

#[test]
fn a_command_run_once_reports_its_exit() {
    let chaos = skip_on_err!(chaos());
    let spec = Traffic {
        name: "once".into(),
        command: Some(CommandLoad {
            run: vec!["sh".into(), "-c".into(), "sleep 0.3; exit 7".into()],
            repeat: false,
        }),
        ..Traffic::default()
    };
    let mut run = start(&chaos, &spec);
    assert_eq!(run.exit(), None, "running");
    let deadline = Instant::now() + Duration::from_secs(5);
    while run.exit().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let exit = run.exit().expect("the command's exit");
    run.stop().unwrap();
    println!("command run once: {exit:?}");
    assert_eq!((exit.code, exit.signal), (Some(7), None));
    let at = exit.at_ms.expect("at_ms");
    assert!((280..2000).contains(&at), "exited at {at} ms");
    assert!(run.log().ops().is_empty());
}

/// The pid a command wrote to `file`, once it has.
fn pid_in(file: &Path) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(text) = std::fs::read_to_string(file)
            && let Ok(pid) = text.trim().parse()
        {
            return pid;
        }
        assert!(Instant::now() < deadline, "the command never wrote its pid");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn stop_ends_a_long_command_and_its_worker() {
    let chaos = skip_on_err!(chaos());
    let dir = TempDir::new();
    let pidfile = dir.0.join("pid");
    let spec = Traffic {
        name: "bench".into(),
        command: Some(CommandLoad {
            run: vec![
                "sh".into(),
                "-c".into(),
                format!("echo $$ > {}; exec sleep 60", pidfile.display()),
            ],
            repeat: false,
        }),
        ..Traffic::default()
    };
    let mut run = start(&chaos, &spec);
    let worker = run.pid();
    let command = pid_in(&pidfile);
    assert!(alive(command));
    let t = Instant::now();
    run.stop().unwrap();
    println!("stopped a command run once in {:?}", t.elapsed());
    assert!(t.elapsed() < Duration::from_secs(3));
    assert!(!alive(command), "command {command} outlived stop");
    assert!(!alive(worker), "worker {worker} outlived stop");
    let exit = run.exit().expect("how it ended");
    assert_eq!(exit.signal, Some(libc::SIGTERM));
    assert_eq!(exit.at_ms, None, "it ran to the end of the drill");
    run.stop().unwrap();
}

#[test]
fn files_are_removed_even_when_the_worker_was_killed() {
    let chaos = skip_on_err!(chaos());
    let dir = TempDir::new();
    let spec = Traffic {
        name: "killed".into(),
        file: Some(FileLoad {
            path: dir.0.display().to_string(),
            block_size: Some("4k".into()),
            file_size: Some("64k".into()),
            fsync: Some(false),
        }),
        rate: Some(100.0),
        ..Traffic::default()
    };
    let mut run = start(&chaos, &spec);
    // The file exists once the first write is done.
    wait_ops(&run, 1);
    assert_eq!(dir.files().len(), 1);
    let pid = run.pid();
    // SAFETY: kill(2) on the worker this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    std::thread::sleep(Duration::from_millis(100));
    run.stop().unwrap();
    assert!(dir.files().is_empty(), "files left: {:?}", dir.files());
    assert!(!run.log().ops().is_empty());
    drop(run);
}

/// A TCP server that answers each connection's first read with "ok".
fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { break };
            let mut buf = [0u8; 64];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"ok");
        }
    });
    addr
}

#[test]
fn an_unpaced_load_is_measured_in_full() {
    let chaos = skip_on_err!(chaos());
    let addr = echo_server();
    let spec = Traffic {
        name: "flat-out".into(),
        tcp: Some(TcpLoad {
            address: addr.to_string(),
            send: Some("x".into()),
        }),
        concurrency: Some(2),
        ..Traffic::default()
    };
    let mut run = start(&chaos, &spec);
    std::thread::sleep(Duration::from_secs(1));
    run.stop().unwrap();
    let ops = run.log().ops();
    println!(
        "unpaced tcp load, 2 workers, 1 s: {} ops, {} errors",
        ops.len(),
        errors(&ops)
    );
    // Flat out means one operation after another with no pause: far more than a paced load
    // would make (how many is for `cargo xtask bench`, not a test; TCG makes a few hundred).
    assert!(ops.len() >= 100, "{} ops in 1 s", ops.len());
    assert_eq!(errors(&ops), 0, "{:?}", run.log().last_error());
    // The worker ended its operations before it exited, and every line it wrote was read: no
    // operation was left begun without its end.
    assert!(
        run.log().in_flight().is_empty(),
        "{:?}",
        run.log().in_flight()
    );
}

/// The runner's death closes the worker's stdin (the kernel closes a killed process's files):
/// the worker then stops by itself, reporting the operations it finished.
#[test]
fn a_worker_stops_when_its_runner_goes_away() {
    let chaos = skip_on_err!(chaos());
    let addr = echo_server();
    let spec = Traffic {
        name: "orphan".into(),
        tcp: Some(TcpLoad {
            address: addr.to_string(),
            send: Some("x".into()),
        }),
        rate: Some(100.0),
        ..Traffic::default()
    };
    let mut child = std::process::Command::new(chaos.bin())
        .arg("__traffic-worker")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{}", serde_json::to_string(&spec).unwrap()).unwrap();
    // Long enough for a few operations even where the worker starts slowly (TCG).
    std::thread::sleep(Duration::from_millis(1000));
    let t = Instant::now();
    drop(stdin);
    let status = child.wait().unwrap();
    println!("worker ended {:?} after its stdin closed", t.elapsed());
    assert!(status.success(), "{status}");
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(!alive(pid));
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let ends = out.lines().filter(|l| l.starts_with("E 0 ")).count();
    let begins = out.lines().filter(|l| l.starts_with("B 0 ")).count();
    assert!(ends >= 5, "{ends} operations reported:\n{out}");
    assert_eq!(begins, ends, "every operation begun was ended");
    assert!(
        out.lines()
            .all(|l| l.starts_with("B 0 ") || l.ends_with(" 1"))
    );

    // Input that is not a generator: a one-line error and a failure exit.
    let out = chaos
        .command(&["__traffic-worker"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a generator"), "{err}");
}
