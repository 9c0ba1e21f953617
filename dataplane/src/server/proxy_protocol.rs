//! The PROXY protocol (versions 1 and 2, as HAProxy specifies them): a TCP load balancer that
//! does not speak HTTP (AWS NLB, HAProxy in TCP mode, many `LoadBalancer` Services) writes the
//! client's address in a short header before the connection's first byte. Read only from
//! trusted proxies: anyone else could claim any address.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use clap::ValueEnum;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Whether a listener expects PROXY protocol headers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum ProxyProtocol {
    /// Never: the first byte is the request's.
    #[default]
    Off,
    /// A trusted peer's connection may start with one (v1 or v2); other connections are plain.
    Optional,
    /// Every connection must come from a trusted peer and start with one; others are closed.
    Required,
}

/// The v2 header's first twelve bytes.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// A v1 header's start, and its longest possible length (the specification's 107 bytes).
const V1_PREFIX: &[u8; 6] = b"PROXY ";
const V1_MAX: usize = 107;
/// Longest v2 header accepted: the addresses and room for TLVs (which are skipped).
const V2_MAX: usize = 16 + 1024;

/// What the first bytes of a connection say.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Too few bytes to tell yet.
    Incomplete,
    /// Not a PROXY header: the bytes are the request's.
    NotProxy,
    /// A header of `len` bytes; `source` is the client's address, `None` when the header says
    /// the connection is the proxy's own (v2 `LOCAL`, v1 `UNKNOWN`, non-IP families).
    Header { len: usize, source: Option<SocketAddr> },
    /// A malformed header.
    Invalid(&'static str),
}

/// Reads a PROXY header from the start of `buf`.
pub fn parse(buf: &[u8]) -> Parsed {
    if buf.len() < V2_SIGNATURE.len() && V2_SIGNATURE.starts_with(buf) {
        // Also a prefix of nothing else: `\r` cannot start a v1 header.
        return Parsed::Incomplete;
    }
    if buf.starts_with(V2_SIGNATURE) {
        return parse_v2(buf);
    }
    if buf.len() < V1_PREFIX.len() && V1_PREFIX.starts_with(buf) {
        return Parsed::Incomplete;
    }
    if buf.starts_with(V1_PREFIX) {
        return parse_v1(buf);
    }
    Parsed::NotProxy
}

fn parse_v1(buf: &[u8]) -> Parsed {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Parsed::Invalid("v1 header longer than 107 bytes")
        } else {
            Parsed::Incomplete
        };
    };
    let Ok(line) = std::str::from_utf8(&buf[V1_PREFIX.len()..end]) else {
        return Parsed::Invalid("v1 header not ASCII");
    };
    let len = end + 2;
    let fields: Vec<&str> = line.split(' ').collect();
    match fields.as_slice() {
        ["UNKNOWN", ..] => Parsed::Header { len, source: None },
        [family @ ("TCP4" | "TCP6"), source, _destination, source_port, _destination_port] => {
            let (Ok(ip), Ok(port)) = (source.parse::<IpAddr>(), source_port.parse::<u16>()) else {
                return Parsed::Invalid("v1 header with a bad source address or port");
            };
            if (*family == "TCP4") != ip.is_ipv4() {
                return Parsed::Invalid("v1 header whose address does not match its family");
            }
            Parsed::Header { len, source: Some(SocketAddr::new(ip, port)) }
        }
        _ => Parsed::Invalid("v1 header without TCP4, TCP6 or UNKNOWN and four fields"),
    }
}

fn parse_v2(buf: &[u8]) -> Parsed {
    if buf.len() < 16 {
        return Parsed::Incomplete;
    }
    let (version, command) = (buf[12] >> 4, buf[12] & 0x0f);
    if version != 2 {
        return Parsed::Invalid("v2 header with a version other than 2");
    }
    let body = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let len = 16 + body;
    if len > V2_MAX {
        return Parsed::Invalid("v2 header too long");
    }
    if buf.len() < len {
        return Parsed::Incomplete;
    }
    let address = &buf[16..len];
    match command {
        0 => return Parsed::Header { len, source: None },
        1 => {}
        _ => return Parsed::Invalid("v2 header with an unknown command"),
    }
    // High nibble: address family (1 IPv4, 2 IPv6, 3 Unix); low: transport (1 stream, 2 datagram).
    let source = match buf[13] >> 4 {
        1 if address.len() >= 12 => {
            let ip = Ipv4Addr::new(address[0], address[1], address[2], address[3]);
            Some(SocketAddr::new(ip.into(), u16::from_be_bytes([address[8], address[9]])))
        }
        2 if address.len() >= 36 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&address[..16]);
            Some(SocketAddr::new(Ipv6Addr::from(octets).into(), u16::from_be_bytes([address[32], address[33]])))
        }
        1 | 2 => return Parsed::Invalid("v2 header shorter than its address family needs"),
        _ => None,
    };
    Parsed::Header { len, source }
}

/// Reads the PROXY header at the start of `stream`, if any, within `timeout`. Returns the
/// bytes read past it (the request's first bytes) and the client's address it named.
pub async fn read_header(
    stream: &mut TcpStream,
    mode: ProxyProtocol,
    timeout: Duration,
) -> io::Result<(Bytes, Option<SocketAddr>)> {
    let read = async {
        let mut buf = BytesMut::with_capacity(256);
        loop {
            match parse(&buf) {
                Parsed::Incomplete => {
                    if stream.read_buf(&mut buf).await? == 0 {
                        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed before the PROXY header"));
                    }
                }
                Parsed::NotProxy if mode == ProxyProtocol::Required => {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "no PROXY header"));
                }
                Parsed::NotProxy => return Ok((buf.freeze(), None)),
                Parsed::Header { len, source } => {
                    buf.advance(len);
                    return Ok((buf.freeze(), source));
                }
                Parsed::Invalid(why) => return Err(io::Error::new(io::ErrorKind::InvalidData, why)),
            }
        }
    };
    tokio::time::timeout(timeout, read)
        .await
        .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "no PROXY header in time")))
}

/// A connection whose first bytes were already read: they are read again first.
pub struct Prefixed {
    prefix: Bytes,
    inner: TcpStream,
}

impl Prefixed {
    /// `inner`, with `prefix` put back in front.
    pub fn new(prefix: Bytes, inner: TcpStream) -> Self {
        Self { prefix, inner }
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.prefix.is_empty() {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        let n = buf.remaining().min(self.prefix.len());
        buf.put_slice(&self.prefix[..n]);
        self.prefix.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, address: &[u8]) -> Vec<u8> {
        let mut header = V2_SIGNATURE.to_vec();
        header.push(0x20 | command);
        header.push(family);
        header.extend_from_slice(&u16::try_from(address.len()).expect("short").to_be_bytes());
        header.extend_from_slice(address);
        header
    }

    #[test]
    fn v1_headers_give_the_source_and_their_length() {
        let input = b"PROXY TCP4 203.0.113.9 10.0.0.1 56324 8080\r\nGET / HTTP/1.1\r\n";
        let len = input.iter().position(|b| *b == b'\n').expect("line") + 1;
        assert_eq!(parse(input), Parsed::Header { len, source: Some("203.0.113.9:56324".parse().expect("addr")) });
        let input = b"PROXY TCP6 2001:db8::1 2001:db8::2 4711 443\r\n";
        assert_eq!(
            parse(input),
            Parsed::Header { len: input.len(), source: Some("[2001:db8::1]:4711".parse().expect("addr")) }
        );
        assert_eq!(parse(b"PROXY UNKNOWN\r\n"), Parsed::Header { len: 15, source: None });
    }

    #[test]
    fn v1_rejects_what_is_malformed() {
        assert!(matches!(parse(b"PROXY TCP4 2001:db8::1 10.0.0.1 1 2\r\n"), Parsed::Invalid(_)));
        assert!(matches!(parse(b"PROXY TCP4 203.0.113.9 10.0.0.1 99999 2\r\n"), Parsed::Invalid(_)));
        assert!(matches!(parse(b"PROXY UDP4 x\r\n"), Parsed::Invalid(_)));
        assert!(matches!(parse(&[b'P', b'R', b'O', b'X', b'Y', b' ', b'T'].repeat(20)), Parsed::Invalid(_)));
    }

    #[test]
    fn v2_headers_give_the_source_and_skip_tlvs() {
        let mut address = vec![203, 0, 113, 9, 10, 0, 0, 1];
        address.extend_from_slice(&56324u16.to_be_bytes());
        address.extend_from_slice(&8080u16.to_be_bytes());
        address.extend_from_slice(&[0x04, 0x00, 0x01, 0xaa]); // a TLV (NOOP) to skip
        let header = v2(1, 0x11, &address);
        let mut input = header.clone();
        input.extend_from_slice(b"GET /");
        assert_eq!(
            parse(&input),
            Parsed::Header { len: header.len(), source: Some("203.0.113.9:56324".parse().expect("addr")) }
        );
        let mut address = Vec::new();
        address.extend_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().expect("v6").octets());
        address.extend_from_slice(&[0; 16]);
        address.extend_from_slice(&[0x12, 0x67, 0, 80]);
        assert_eq!(
            parse(&v2(1, 0x21, &address)),
            Parsed::Header { len: 52, source: Some("[2001:db8::7]:4711".parse().expect("addr")) }
        );
        // LOCAL (a health check from the proxy itself) and Unix sockets name no client.
        assert_eq!(parse(&v2(0, 0x00, &[])), Parsed::Header { len: 16, source: None });
        assert_eq!(parse(&v2(1, 0x31, &[0; 216])), Parsed::Header { len: 232, source: None });
    }

    #[test]
    fn v2_rejects_what_is_malformed() {
        let mut bad_version = v2(1, 0x11, &[0; 12]);
        bad_version[12] = 0x11;
        assert!(matches!(parse(&bad_version), Parsed::Invalid(_)));
        assert!(matches!(parse(&v2(1, 0x11, &[0; 4])), Parsed::Invalid(_)));
        assert!(matches!(parse(&v2(1, 0x21, &[0; 12])), Parsed::Invalid(_)));
        assert!(matches!(parse(&v2(5, 0x11, &[0; 12])), Parsed::Invalid(_)));
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert!(matches!(parse(&huge), Parsed::Invalid(_)));
    }

    #[test]
    fn every_prefix_of_a_header_is_incomplete_and_requests_are_not_headers() {
        let mut address = vec![203, 0, 113, 9, 10, 0, 0, 1];
        address.extend_from_slice(&[0xdc, 0x04, 0x1f, 0x90]);
        for header in [v2(1, 0x11, &address), b"PROXY TCP4 203.0.113.9 10.0.0.1 56324 8080\r\n".to_vec()] {
            for cut in 0..header.len() {
                assert_eq!(parse(&header[..cut]), Parsed::Incomplete, "cut at {cut}");
            }
        }
        assert_eq!(parse(b"GET /v1/models HTTP/1.1\r\n"), Parsed::NotProxy);
        assert_eq!(parse(b"PRI * HTTP/2.0\r\n"), Parsed::NotProxy);
        assert_eq!(parse(b"\r\nX"), Parsed::NotProxy);
    }
}
