//! A two-host world for network fault tests, driven through the `chaos` binary as a user would,
//! with an oracle snapshot taken before any fault and every fault it armed recovered on drop.

use std::{cell::RefCell, net::IpAddr};

use crate::{
    Oracle, Snapshot, TwoHosts, UdpSink,
    chaos::{Chaos, tc_requirement},
    udp_blast,
    world::Host,
};

/// UDP port the drill's sinks listen on.
pub const PORT: u16 = 47_000;

/// A two-host world with an oracle snapshot taken before any fault.
pub struct Drill {
    /// The `chaos` binary, with any environment the drill forces.
    pub chaos: Chaos,
    /// Hosts A and B.
    pub world: TwoHosts,
    /// The oracle, looking at both namespaces.
    pub oracle: Oracle,
    /// What the oracle saw before any fault (retake it after changing the world on purpose).
    pub before: Snapshot,
    /// Faults armed through this drill, recovered on drop if the test failed before doing so.
    armed: RefCell<Vec<String>>,
}

impl Drop for Drill {
    fn drop(&mut self) {
        for id in self.armed.borrow().iter() {
            // Already recovered by the test in the normal case: "no fault with id" is fine.
            let _ = self.chaos.recover(id);
        }
    }
}

impl Drill {
    /// Builds the world once the kernel can attach TC programs in `attach` mode (`tcx`,
    /// `clsact`, or `any`); `Err` is a skip reason.
    pub fn new(attach: &str) -> Result<Drill, String> {
        crate::skip::require_root()?;
        let chaos = Chaos::from_env()?;
        tc_requirement(&chaos, attach)?;
        if attach != "any" {
            // Force the attach mode under test.
            return Drill::with(chaos.env("CHAOS_TC_ATTACH", attach));
        }
        Drill::with(chaos)
    }

    /// Builds the world for a given `chaos`.
    pub fn with(chaos: Chaos) -> Result<Drill, String> {
        let world = TwoHosts::new().map_err(|e| format!("building the world: {e}"))?;
        let oracle = Oracle::new().with_netns(&world.netns_names());
        let before = oracle.snapshot();
        Ok(Drill {
            chaos,
            world,
            oracle,
            before,
            armed: RefCell::default(),
        })
    }

    /// `chaos inject net <action> <args> --interface <host's> --netns <host's> --duration
    /// <duration>`; returns the fault id, or what chaos printed when it refused.
    pub fn try_net(
        &self,
        action: &str,
        host: &Host,
        args: &[&str],
        duration: &str,
    ) -> Result<String, crate::chaos::Failure> {
        let mut full = vec!["net", action];
        full.extend_from_slice(args);
        full.extend_from_slice(&[
            "--interface",
            &host.ifname,
            "--netns",
            host.ns.name(),
            "--duration",
            duration,
        ]);
        let id = self.chaos.inject(&full)?;
        self.armed.borrow_mut().push(id.clone());
        Ok(id)
    }

    /// Like [`Drill::try_net`], panicking when chaos refuses.
    pub fn net(&self, action: &str, host: &Host, args: &[&str], duration: &str) -> String {
        self.try_net(action, host, args, duration)
            .unwrap_or_else(|f| panic!("chaos inject net {action} {args:?}: {f}"))
    }

    /// `chaos inject net loss --percent P --direction D` on `host`'s interface.
    pub fn loss(&self, host: &Host, percent: f64, direction: &str, duration: &str) -> String {
        self.net(
            "loss",
            host,
            &["--percent", &percent.to_string(), "--direction", direction],
            duration,
        )
    }

    /// Sends `n` datagrams from A to B at `to`:[`PORT`] and returns how many arrived.
    pub fn send(&self, to: IpAddr, n: u64) -> u64 {
        self.send_port(to, PORT, n)
    }

    /// Sends `n` datagrams from A to B at `to:port` and returns how many arrived.
    pub fn send_port(&self, to: IpAddr, port: u16, n: u64) -> u64 {
        let sink = UdpSink::bind(&self.world.b.ns, to, port).expect("bind sink");
        let sent = udp_blast(&self.world.a.ns, to, port, n, 64).expect("blast");
        assert_eq!(sent, n, "the sender itself must lose nothing");
        sink.count()
    }

    /// Sends `n` datagrams from B back to A at `port` and returns how many arrived.
    pub fn send_back(&self, port: u16, n: u64) -> u64 {
        let to = self.world.a.v4();
        let sink = UdpSink::bind(&self.world.a.ns, to, port).expect("bind sink");
        let sent = udp_blast(&self.world.b.ns, to, port, n, 64).expect("blast");
        assert_eq!(sent, n, "the sender itself must lose nothing");
        sink.count()
    }

    /// Sends to B's IPv4 address.
    pub fn send_v4(&self, n: u64) -> u64 {
        self.send(self.world.b.v4(), n)
    }

    /// Panics, listing them, if anything of ours is left compared to [`Drill::before`].
    pub fn assert_clean(&self) {
        self.oracle.assert_clean(&self.before);
    }
}
