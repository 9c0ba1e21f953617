//! Who sent a request. Behind a load balancer or an ingress every connection comes from a
//! proxy; the client is then found in `Forwarded` (RFC 7239) or `X-Forwarded-For`, read from
//! right to left: each address appended by a trusted proxy names the hop before it, and the
//! first one no trusted proxy vouches for is the client. A header from a peer that is not a
//! trusted proxy is ignored (anyone can write one), so with no trusted proxies configured the
//! TCP peer is the client and no header is read at all.

use std::net::{IpAddr, SocketAddr};

use hyper::header::HeaderMap;
use ipnet::IpNet;

/// The proxies whose forwarding headers (and PROXY protocol headers) are believed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    /// Trusts `nets` (IPv4-mapped IPv6 peers are matched as the IPv4 address they carry).
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self { nets }
    }

    /// Whether no proxy is trusted (the TCP peer is always the client).
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// Whether `address` is a trusted proxy.
    pub fn contains(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        self.nets.iter().any(|net| net.contains(&address))
    }

    /// The client of a request that arrived from `peer` with `headers`.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if self.nets.is_empty() || !self.contains(peer) {
            return peer;
        }
        // `Forwarded` is the standard; a proxy that writes it is read from it alone, since a
        // chain may carry both and only one of them lists every hop.
        let forwarded = headers.get_all(hyper::header::FORWARDED);
        if forwarded.iter().next().is_some() {
            let hops = forwarded.iter().flat_map(|value| value.as_bytes().split(|b| *b == b','));
            return self.walk(peer, hops.map(forwarded_for));
        }
        let hops =
            headers.get_all("x-forwarded-for").into_iter().flat_map(|value| value.as_bytes().split(|b| *b == b','));
        self.walk(peer, hops.map(plain_address))
    }

    /// Walks the hops from the right while they are trusted. An entry that names no address
    /// (`unknown`, an obfuscated name, garbage) ends the walk at the proxy that wrote it.
    fn walk(&self, peer: IpAddr, hops: impl Iterator<Item = Option<IpAddr>>) -> IpAddr {
        let hops: Vec<Option<IpAddr>> = hops.collect();
        let mut client = peer;
        for hop in hops.into_iter().rev() {
            let Some(address) = hop else { return client };
            client = address.to_canonical();
            if !self.contains(client) {
                return client;
            }
        }
        client
    }
}

impl std::str::FromStr for TrustedProxies {
    type Err = String;

    /// Comma-separated CIDRs or single addresses (`10.0.0.0/8,192.0.2.7,fd00::/8`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut nets = Vec::new();
        for item in s.split(',').map(str::trim).filter(|item| !item.is_empty()) {
            let net = match item.parse::<IpNet>() {
                Ok(net) => net.trunc(),
                Err(_) => item
                    .parse::<IpAddr>()
                    .map(IpNet::from)
                    .map_err(|_| format!("{item:?} is neither a CIDR (10.0.0.0/8, fd00::/8) nor an IP address"))?,
            };
            nets.push(net);
        }
        Ok(Self { nets })
    }
}

impl std::fmt::Display for TrustedProxies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, net) in self.nets.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{net}")?;
        }
        Ok(())
    }
}

/// The address of one `X-Forwarded-For` entry: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`
/// or `[2001:db8::1]:4711`.
fn plain_address(entry: &[u8]) -> Option<IpAddr> {
    let entry = std::str::from_utf8(entry).ok()?.trim();
    if let Ok(address) = entry.parse::<IpAddr>() {
        return Some(address);
    }
    if let Ok(socket) = entry.parse::<SocketAddr>() {
        return Some(socket.ip());
    }
    entry.strip_prefix('[').and_then(|rest| rest.strip_suffix(']')).and_then(|inner| inner.parse().ok())
}

/// The `for=` address of one `Forwarded` element (`for=192.0.2.60;proto=http;by=203.0.113.43`,
/// `for="[2001:db8:cafe::17]:4711"`); `None` for `unknown`, an obfuscated identifier or an
/// element without `for`.
fn forwarded_for(element: &[u8]) -> Option<IpAddr> {
    let element = std::str::from_utf8(element).ok()?;
    let value = element.split(';').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        name.trim().eq_ignore_ascii_case("for").then_some(value.trim())
    })?;
    let value = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value);
    plain_address(value.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn proxies(list: &str) -> TrustedProxies {
        list.parse().expect("valid list")
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).expect("header value"));
        }
        map
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn without_trusted_proxies_the_peer_is_the_client_whatever_the_headers_say() {
        let h = headers(&[("x-forwarded-for", "203.0.113.9"), ("forwarded", "for=203.0.113.9")]);
        assert_eq!(TrustedProxies::default().client(ip("10.0.0.5"), &h), ip("10.0.0.5"));
    }

    #[test]
    fn an_untrusted_peer_cannot_spoof_its_address_with_a_header() {
        let h = headers(&[("x-forwarded-for", "10.1.1.1")]);
        assert_eq!(proxies("10.0.0.0/8").client(ip("198.51.100.4"), &h), ip("198.51.100.4"));
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        // The client wrote a fake first entry; the ingress appended the real one.
        let h = headers(&[("x-forwarded-for", "1.2.3.4, 203.0.113.9, 10.0.0.7")]);
        assert_eq!(proxies("10.0.0.0/8").client(ip("10.0.0.9"), &h), ip("203.0.113.9"));
        // Several header lines are one list, in order.
        let h = headers(&[("x-forwarded-for", "1.2.3.4"), ("x-forwarded-for", "203.0.113.9")]);
        assert_eq!(proxies("10.0.0.0/8").client(ip("10.0.0.9"), &h), ip("203.0.113.9"));
    }

    #[test]
    fn when_every_hop_is_trusted_the_leftmost_is_the_client() {
        let h = headers(&[("x-forwarded-for", "10.2.0.1, 10.0.0.7")]);
        assert_eq!(proxies("10.0.0.0/8").client(ip("10.0.0.9"), &h), ip("10.2.0.1"));
        // No header at all from a trusted peer: the peer itself.
        assert_eq!(proxies("10.0.0.0/8").client(ip("10.0.0.9"), &HeaderMap::new()), ip("10.0.0.9"));
    }

    #[test]
    fn ports_brackets_and_ipv6_are_understood() {
        let trusted = proxies("fd00::/8, 10.0.0.0/8");
        let h = headers(&[("x-forwarded-for", "[2001:db8::1]:4711, 203.0.113.9:80")]);
        assert_eq!(trusted.client(ip("fd00::1"), &h), ip("203.0.113.9"));
        let h = headers(&[("x-forwarded-for", "2001:db8::1, fd00::2")]);
        assert_eq!(trusted.client(ip("fd00::1"), &h), ip("2001:db8::1"));
        // A dual-stack listener sees IPv4 peers as mapped IPv6 addresses.
        let h = headers(&[("x-forwarded-for", "::ffff:203.0.113.9")]);
        assert_eq!(trusted.client(ip("::ffff:10.0.0.3"), &h), ip("203.0.113.9"));
    }

    #[test]
    fn forwarded_is_read_and_wins_over_x_forwarded_for() {
        let trusted = proxies("10.0.0.0/8");
        let h = headers(&[
            ("forwarded", r#"for=198.51.100.1;proto=https, for="[2001:db8:cafe::17]:4711";by=10.0.0.1"#),
            ("x-forwarded-for", "203.0.113.50"),
        ]);
        assert_eq!(trusted.client(ip("10.0.0.9"), &h), ip("2001:db8:cafe::17"));
        let h = headers(&[("forwarded", "For=192.0.2.43"), ("forwarded", "for=10.0.0.4")]);
        assert_eq!(trusted.client(ip("10.0.0.9"), &h), ip("192.0.2.43"));
    }

    #[test]
    fn an_entry_without_an_address_stops_at_the_proxy_that_wrote_it() {
        let trusted = proxies("10.0.0.0/8");
        let h = headers(&[("forwarded", "for=unknown, for=10.0.0.4")]);
        assert_eq!(trusted.client(ip("10.0.0.9"), &h), ip("10.0.0.4"));
        let h = headers(&[("x-forwarded-for", "garbage, 10.0.0.4")]);
        assert_eq!(trusted.client(ip("10.0.0.9"), &h), ip("10.0.0.4"));
        let h = headers(&[("forwarded", "for=_hidden")]);
        assert_eq!(trusted.client(ip("10.0.0.9"), &h), ip("10.0.0.9"));
    }

    #[test]
    fn lists_parse_cidrs_and_single_addresses_and_name_a_bad_entry() {
        let parsed = proxies(" 10.1.2.3/8 , 192.0.2.7,fd00::/8 ");
        assert_eq!(parsed.to_string(), "10.0.0.0/8,192.0.2.7/32,fd00::/8");
        assert!(parsed.contains(ip("192.0.2.7")) && !parsed.contains(ip("192.0.2.8")));
        let error = "10.0.0.0/8,not-an-ip".parse::<TrustedProxies>().expect_err("bad entry");
        assert!(error.contains("not-an-ip"), "{error}");
        assert!(proxies("").is_empty());
    }
}
