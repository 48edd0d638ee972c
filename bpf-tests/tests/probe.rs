//! `chaos probe` answers every row from the kernel, and on the kernels whose facts are known
//! (this project's host kernel and the three VM kernels) it finds exactly those facts.

use bpf_tests::{chaos::Chaos, skip_on_err, skip_unless};

/// (feature, expected) pairs for a known kernel.
fn expectations(kernel: &str) -> Option<Vec<(&'static str, bool)>> {
    let vm = std::env::var("CHAOS_IN_VM").ok();
    Some(match vm.as_deref() {
        // The shared fault-injection kernel: everything built in.
        Some("test") => vec![
            ("tc_clsact", true),
            ("tcx", true),
            ("lsm", true),
            ("fentry", true),
            ("fmod_ret", true),
            ("kprobe", true),
            ("kprobe_override", true),
            ("error_injection_bio", true),
            ("error_injection_syscall", true),
            ("qdisc_fq", true),
            ("qdisc_netem", true),
            ("btf", true),
        ],
        // Debian kernels: BPF LSM, fentry, kprobes, fq and netem (modules the VM loads), no
        // function error injection.
        Some("debian-6.12") => vec![
            ("lsm", true),
            ("qdisc_fq", true),
            ("qdisc_netem", true),
            ("tc_clsact", true),
            ("tcx", true),
            ("fentry", true),
            ("kprobe", true),
            ("error_injection_bio", false),
            ("error_injection_syscall", false),
            ("btf", true),
        ],
        Some("debian-6.1") => vec![
            ("lsm", true),
            ("qdisc_fq", true),
            ("qdisc_netem", true),
            ("tc_clsact", true),
            ("tcx", false),
            ("fentry", true),
            ("kprobe", true),
            ("error_injection_bio", false),
            ("error_injection_syscall", false),
            ("btf", true),
        ],
        // The project's Firecracker host kernel, as DEVELOPERS.md records it.
        None if kernel.contains("-fc-") => vec![
            ("tc_clsact", true),
            ("tcx", true),
            ("cgroup_skb", true),
            ("cgroup_sock_addr", true),
            ("cgroup_sockopt", true),
            ("sock_ops", true),
            ("tracepoint", true),
            ("raw_tracepoint", true),
            ("seccomp_user_notif", true),
            ("cgroup_v1_blkio", true),
            ("lsm", false),
            ("fentry", false),
            ("fmod_ret", false),
            ("kprobe", false),
            ("error_injection_bio", false),
            ("qdisc_fq", false),
            ("qdisc_netem", false),
        ],
        _ => return None,
    })
}

#[test]
fn probe_answers_every_row_and_matches_known_kernels() {
    skip_unless!(bpf_tests::skip::require_root());
    let chaos = skip_on_err!(Chaos::from_env());
    let probe = chaos.probe();
    let rows = probe["probe"]["rows"].as_array().expect("rows");
    assert!(rows.len() >= 30, "{} rows", rows.len());
    for r in rows {
        assert!(r["ok"].is_boolean(), "{r}");
        assert!(
            !r["detail"].as_str().unwrap_or("").is_empty() && r["detail"] != "not probed",
            "every row says how it was found or why not: {r}"
        );
    }
    let kernel = probe["probe"]["kernel"].as_str().expect("kernel");
    println!(
        "probe of {kernel} took {:.0} ms",
        probe["probe"]["elapsed"].as_f64().unwrap_or(-1.0)
    );
    let faults = probe["faults"].as_array().expect("fault table");
    assert!(faults.iter().any(|f| f["kind"] == "net loss / partition"));
    let Some(expected) = expectations(kernel) else {
        println!("no recorded facts for {kernel}; rows checked for completeness only");
        return;
    };
    let mut wrong = Vec::new();
    for (feature, want) in expected {
        let row = rows
            .iter()
            .find(|r| r["feature"] == feature)
            .unwrap_or_else(|| panic!("no row {feature}"));
        if row["ok"] != want {
            wrong.push(format!("{feature}: expected {want}, probe said {row}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "probe disagrees with the known facts:\n{}",
        wrong.join("\n")
    );
}
