//! Tests of the network namespace guard.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use bpf_tests::skip::require_netns;
use bpf_tests::{NetNs, skip_unless};

fn listed(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

#[test]
fn netns_is_made_and_removed() {
    skip_unless!(require_netns());
    let ns = NetNs::new().expect("netns");
    let name = ns.name().to_owned();
    assert!(name.starts_with("chaos-t-"));
    assert!(listed(&name));
    let list = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&list.stdout).contains(&name));
    // Inside: lo, up, and nothing else but the fallback devices that built-in tunnel drivers
    // put in every namespace (sit0@NONE, tunl0@NONE, ...).
    let links = ns.exec(&["ip", "-o", "link", "show"]).unwrap();
    let own: Vec<&str> = links.lines().filter(|l| !l.contains("@NONE:")).collect();
    assert_eq!(own.len(), 1, "{links}");
    assert!(own[0].contains("lo:") && own[0].contains("UP"), "{links}");
    let host_ino = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
    let inside = ns.run(|| std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino());
    assert_eq!(inside, ns.inode().unwrap());
    assert_ne!(inside, host_ino);
    drop(ns);
    assert!(!listed(&name));
}

#[test]
fn enter_guard_returns_to_the_original_namespace() {
    skip_unless!(require_netns());
    let ns = NetNs::new().unwrap();
    let own = || std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino();
    let before = own();
    {
        let _g = ns.enter().unwrap();
        assert_eq!(own(), ns.inode().unwrap());
    }
    assert_eq!(own(), before);
}

#[test]
fn panic_inside_run_still_removes_the_namespace() {
    skip_unless!(require_netns());
    let mut name = String::new();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let ns = NetNs::new().unwrap();
        name = ns.name().to_owned();
        ns.run(|| panic!("boom inside the namespace"));
    }));
    assert!(result.is_err());
    assert!(!name.is_empty());
    assert!(!listed(&name), "{name} left behind");
}

#[test]
fn drop_kills_processes_started_inside() {
    skip_unless!(require_netns());
    let ns = NetNs::new().unwrap();
    let mut child = ns.command("sleep").arg("1000").spawn().unwrap();
    let mut guarded = ns
        .spawn({
            let mut c = std::process::Command::new("sleep");
            c.arg("1000");
            c
        })
        .unwrap();
    // Both run inside the namespace.
    let ino = ns.inode().unwrap();
    for pid in [child.id(), guarded.pid()] {
        let deadline = Instant::now() + Duration::from_secs(2);
        while std::fs::metadata(format!("/proc/{pid}/ns/net"))
            .unwrap()
            .ino()
            != ino
        {
            assert!(
                Instant::now() < deadline,
                "pid {pid} never entered the namespace"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    drop(ns);
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(!status.success());
            break;
        }
        assert!(Instant::now() < deadline, "sleep survived its namespace");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!guarded.wait().unwrap().success());
}
