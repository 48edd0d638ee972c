//! A self-contained test network for the demo and for drills that need one: two network
//! namespaces joined by a veth pair, removed on drop. Nothing on the host's own interfaces is
//! touched, and traffic stays between the two namespaces.

use std::{net::Ipv4Addr, process::Command};

use crate::{
    error::{Error, Result},
    netns::NetNs,
};

/// Two hosts, `a` and `b`, on one veth link.
pub struct TwoHosts {
    /// Namespace names (under /run/netns).
    pub ns: [String; 2],
    /// The namespaces, resolved.
    pub netns: [NetNs; 2],
    /// Interface names: `ifname[0]` in `ns[0]`, `ifname[1]` in `ns[1]`.
    pub ifname: [String; 2],
    /// Addresses of the two ends.
    pub addr: [Ipv4Addr; 2],
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| Error::io("running ip (install iproute2)", e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::io(
            format!("ip {}", args.join(" ")),
            std::io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
        ))
    }
}

impl TwoHosts {
    /// Creates the two namespaces (`<prefix>-a`, `<prefix>-b`), the veth pair and addresses
    /// `10.213.<subnet>.1/24` and `.2/24`.
    pub fn new(prefix: &str, subnet: u8) -> Result<TwoHosts> {
        let ns = [format!("{prefix}-a"), format!("{prefix}-b")];
        // Interface names are at most 15 characters.
        let tag = &prefix[prefix.len().saturating_sub(8)..];
        let ifname = [format!("va{tag}"), format!("vb{tag}")];
        let addr = [
            Ipv4Addr::new(10, 213, subnet, 1),
            Ipv4Addr::new(10, 213, subnet, 2),
        ];
        // Removes the namespaces if a later step fails.
        let mut made = Namespaces(Vec::new());
        for n in &ns {
            ip(&["netns", "add", n])?;
            made.0.push(n.clone());
        }
        ip(&[
            "link", "add", &ifname[0], "netns", &ns[0], "type", "veth", "peer", "name", &ifname[1],
            "netns", &ns[1],
        ])?;
        for i in 0..2 {
            let cidr = format!("{}/24", addr[i]);
            ip(&["-n", &ns[i], "addr", "add", &cidr, "dev", &ifname[i]])?;
            ip(&["-n", &ns[i], "link", "set", &ifname[i], "up"])?;
            ip(&["-n", &ns[i], "link", "set", "lo", "up"])?;
        }
        let netns = [
            NetNs::resolve(&ns[0], "netns")?,
            NetNs::resolve(&ns[1], "netns")?,
        ];
        made.0.clear();
        Ok(TwoHosts {
            ns,
            netns,
            ifname,
            addr,
        })
    }
}

struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = ip(&["netns", "del", n]);
        }
    }
}

impl Drop for TwoHosts {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the veth, and with it the peer.
        for n in &self.ns {
            let _ = ip(&["netns", "del", n]);
        }
    }
}

/// One host in its own network namespace, reached from this one through a veth pair: the host
/// end stays here (an interface of the drill's own, never one of the machine's), the peer end
/// is in the namespace. Removed on drop.
pub struct Peer {
    /// The namespace's name (under /run/netns).
    pub ns: String,
    /// The namespace, resolved.
    pub netns: NetNs,
    /// The veth end in this namespace.
    pub host_if: String,
    /// The address of the host end.
    pub host_addr: Ipv4Addr,
    /// The address of the peer, in the namespace.
    pub peer_addr: Ipv4Addr,
}

impl Peer {
    /// Creates namespace `<prefix>`, the veth pair and addresses `10.213.<subnet>.1/24` (here)
    /// and `.2/24` (there).
    pub fn new(prefix: &str, subnet: u8) -> Result<Peer> {
        let ns = prefix.to_owned();
        let tag = &prefix[prefix.len().saturating_sub(8)..];
        let (host_if, peer_if) = (format!("ch{tag}"), format!("cp{tag}"));
        let host_addr = Ipv4Addr::new(10, 213, subnet, 1);
        let peer_addr = Ipv4Addr::new(10, 213, subnet, 2);
        ip(&["netns", "add", &ns])?;
        // Deleting the namespace deletes the peer end, and with it the host end.
        let made = Namespaces(vec![ns.clone()]);
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &peer_if, "netns", &ns,
        ])?;
        let host_cidr = format!("{host_addr}/24");
        let peer_cidr = format!("{peer_addr}/24");
        ip(&["addr", "add", &host_cidr, "dev", &host_if])?;
        ip(&["link", "set", &host_if, "up"])?;
        ip(&["-n", &ns, "addr", "add", &peer_cidr, "dev", &peer_if])?;
        ip(&["-n", &ns, "link", "set", &peer_if, "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        let netns = NetNs::resolve(&ns, "netns")?;
        std::mem::forget(made);
        Ok(Peer {
            ns,
            netns,
            host_if,
            host_addr,
            peer_addr,
        })
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.ns]);
        // Normally gone with its peer; a leftover would keep the route.
        let _ = ip(&["link", "del", &self.host_if]);
    }
}
