//! A veth pair between two namespaces, and the two-host world built on it.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU8, Ordering};

use super::NetNs;

/// A veth pair with one end in each of two namespaces. The ends are made directly inside the
/// namespaces, so the host namespace never sees them. Drop deletes the pair (deleting either
/// namespace deletes it too).
#[derive(Debug)]
pub struct VethPair {
    ns_a: String,
    if_a: String,
    if_b: String,
    ifindex_a: u32,
    ifindex_b: u32,
    mac_a: [u8; 6],
    mac_b: [u8; 6],
}

fn mac_str(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The index of interface `ifname` inside `ns`.
fn ifindex_in(ns: &NetNs, ifname: &str) -> io::Result<u32> {
    let name = std::ffi::CString::new(ifname).map_err(io::Error::other)?;
    // SAFETY: `name` is a valid NUL-terminated string.
    let index = ns.run(|| unsafe { libc::if_nametoindex(name.as_ptr()) });
    if index == 0 {
        return Err(io::Error::other(format!(
            "no interface {ifname} in {}",
            ns.name()
        )));
    }
    Ok(index)
}

impl VethPair {
    /// Makes interfaces `if_a` in `a` and `if_b` in `b` (names of at most 15 bytes), linked to
    /// each other, with the given MAC addresses, both up.
    pub fn new(
        a: &NetNs,
        if_a: &str,
        mac_a: [u8; 6],
        b: &NetNs,
        if_b: &str,
        mac_b: [u8; 6],
    ) -> io::Result<Self> {
        let (ma, mb) = (mac_str(&mac_a), mac_str(&mac_b));
        a.exec(&[
            "ip",
            "link",
            "add",
            if_a,
            "address",
            &ma,
            "type",
            "veth",
            "peer",
            "name",
            if_b,
            "address",
            &mb,
            "netns",
            b.name(),
        ])?;
        let mut pair = VethPair {
            ns_a: a.name().to_owned(),
            if_a: if_a.to_owned(),
            if_b: if_b.to_owned(),
            ifindex_a: 0,
            ifindex_b: 0,
            mac_a,
            mac_b,
        };
        a.exec(&["ip", "link", "set", if_a, "up"])?;
        b.exec(&["ip", "link", "set", if_b, "up"])?;
        pair.ifindex_a = ifindex_in(a, if_a)?;
        pair.ifindex_b = ifindex_in(b, if_b)?;
        Ok(pair)
    }

    /// Name of the end in namespace A.
    pub fn if_a(&self) -> &str {
        &self.if_a
    }

    /// Name of the end in namespace B.
    pub fn if_b(&self) -> &str {
        &self.if_b
    }

    /// Index of the end in A, as seen inside A.
    pub fn ifindex_a(&self) -> u32 {
        self.ifindex_a
    }

    /// Index of the end in B, as seen inside B.
    pub fn ifindex_b(&self) -> u32 {
        self.ifindex_b
    }

    /// MAC address of the end in A.
    pub fn mac_a(&self) -> [u8; 6] {
        self.mac_a
    }

    /// MAC address of the end in B.
    pub fn mac_b(&self) -> [u8; 6] {
        self.mac_b
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        if let Ok(mut cmd) = super::command_in_netns(&self.ns_a, "ip") {
            cmd.args(["link", "del", &self.if_a]);
            let _ = crate::cmd::output(&mut cmd);
        }
    }
}

/// One side of a [`TwoHosts`] world.
#[derive(Debug)]
pub struct Host {
    /// The host's namespace.
    pub ns: NetNs,
    /// Its end of the veth pair.
    pub ifname: String,
    /// Index of that interface inside `ns`.
    pub ifindex: u32,
    /// Its IPv4 address (`10.213.<k>.1` or `.2`, prefix 24).
    pub ipv4: Ipv4Addr,
    /// Its IPv6 address (`fd00:213:<k>::1` or `::2`, prefix 64, no DAD), `None` where the kernel
    /// lacks IPv6.
    pub ipv6: Option<Ipv6Addr>,
    /// The interface's MAC address.
    pub mac: [u8; 6],
}

impl Host {
    /// Its IPv4 address as an [`IpAddr`].
    pub fn v4(&self) -> IpAddr {
        IpAddr::V4(self.ipv4)
    }

    /// Its IPv6 address as an [`IpAddr`] (panics where IPv6 is absent).
    pub fn v6(&self) -> IpAddr {
        IpAddr::V6(self.ipv6.expect("IPv6 is configured"))
    }
}

/// Two namespaces A and B linked by a veth pair (`veth-a` in A, `veth-b` in B) on subnet
/// `10.213.<k>.0/24` and `fd00:213:<k>::/64`. Neighbour entries are permanent, so no ARP or
/// neighbour discovery happens (and no packet waits for it, or is lost to a fault because of it).
#[derive(Debug)]
pub struct TwoHosts {
    // Field order is drop order: the pair goes before the namespaces.
    veth: VethPair,
    /// Host A (the `.1` side).
    pub a: Host,
    /// Host B (the `.2` side).
    pub b: Host,
    k: u8,
}

static SUBNET: AtomicU8 = AtomicU8::new(0);

impl TwoHosts {
    /// Makes the two namespaces, the pair and the addresses.
    pub fn new() -> io::Result<Self> {
        let k = SUBNET.fetch_add(1, Ordering::Relaxed) % 250 + 1;
        let ns_a = NetNs::new()?;
        let ns_b = NetNs::new()?;
        let mac_a = [0x02, 0x13, 0x00, k, 0x00, 0x01];
        let mac_b = [0x02, 0x13, 0x00, k, 0x00, 0x02];
        let veth = VethPair::new(&ns_a, "veth-a", mac_a, &ns_b, "veth-b", mac_b)?;
        let ipv6 = std::path::Path::new("/proc/sys/net/ipv6").exists();
        let mk = |ns: NetNs, ifname: &str, ifindex, last: u8, mac| Host {
            ns,
            ifname: ifname.to_owned(),
            ifindex,
            ipv4: Ipv4Addr::new(10, 213, k, last),
            ipv6: ipv6.then(|| Ipv6Addr::new(0xfd00, 0x213, k as u16, 0, 0, 0, 0, last as u16)),
            mac,
        };
        let world = TwoHosts {
            a: mk(ns_a, "veth-a", veth.ifindex_a(), 1, mac_a),
            b: mk(ns_b, "veth-b", veth.ifindex_b(), 2, mac_b),
            veth,
            k,
        };
        world.configure(&world.a, &world.b)?;
        world.configure(&world.b, &world.a)?;
        Ok(world)
    }

    fn configure(&self, me: &Host, peer: &Host) -> io::Result<()> {
        let dev = me.ifname.as_str();
        let peer_mac = mac_str(&peer.mac);
        me.ns
            .exec(&["ip", "addr", "add", &format!("{}/24", me.ipv4), "dev", dev])?;
        me.ns.exec(&[
            "ip",
            "neigh",
            "replace",
            &peer.ipv4.to_string(),
            "lladdr",
            &peer_mac,
            "dev",
            dev,
            "nud",
            "permanent",
        ])?;
        if let (Some(mine), Some(theirs)) = (me.ipv6, peer.ipv6) {
            me.ns.exec(&[
                "ip",
                "-6",
                "addr",
                "add",
                &format!("{mine}/64"),
                "dev",
                dev,
                "nodad",
            ])?;
            me.ns.exec(&[
                "ip",
                "-6",
                "neigh",
                "replace",
                &theirs.to_string(),
                "lladdr",
                &peer_mac,
                "dev",
                dev,
                "nud",
                "permanent",
            ])?;
        }
        Ok(())
    }

    /// The `k` in `10.213.<k>.0/24`.
    pub fn subnet(&self) -> u8 {
        self.k
    }

    /// The veth pair.
    pub fn veth(&self) -> &VethPair {
        &self.veth
    }

    /// The names of both namespaces, e.g. for [`crate::Oracle::with_netns`].
    pub fn netns_names(&self) -> [String; 2] {
        [self.a.ns.name().to_owned(), self.b.ns.name().to_owned()]
    }
}
