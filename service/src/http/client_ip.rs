//! The client's address, resolved once per request by the audit middleware and left in the request's
//! extensions as [`ClientIp`] for the layers inside it (authentication's refusal counting, the rate limit).

use std::net::IpAddr;
use std::str::FromStr as _;

use http::HeaderMap;

use crate::config::TrustedProxies;

/// The client's address: the peer, unless the peer is a trusted proxy, in which case the nearest address
/// in `X-Forwarded-For` that is not one (clients can prepend anything, so only trusted hops are skipped).
pub(crate) fn client_ip(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &TrustedProxies) -> Option<IpAddr> {
    let peer = peer?;
    let is_trusted = |ip: &IpAddr| trusted.contains(ip);
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut nearest = peer;
    for hop in hops.iter().rev() {
        match IpAddr::from_str(hop) {
            Ok(ip) if is_trusted(&ip) => nearest = ip,
            Ok(ip) => return Some(ip),
            // A hop that does not parse ends what can be believed.
            Err(_) => break,
        }
    }
    Some(nearest)
}

/// The client's address as [`client_ip`] resolved it for this request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientIp(pub(crate) Option<IpAddr>);

#[cfg(test)]
mod tests {
    use super::*;

    fn xff(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", v.parse().unwrap());
        h
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted = TrustedProxies::try_from(vec!["10.0.0.0/8".to_owned(), "192.168.1.1".to_owned()]).unwrap();
        let proxy: IpAddr = "10.1.2.3".parse().unwrap();
        let stranger: IpAddr = "203.0.113.9".parse().unwrap();
        // From a stranger the header is ignored.
        assert_eq!(client_ip(Some(stranger), &xff("1.2.3.4"), &trusted), Some(stranger));
        // Through our proxy the nearest untrusted hop is the client; what the client prepended is ignored.
        assert_eq!(client_ip(Some(proxy), &xff("6.6.6.6, 1.2.3.4, 10.9.9.9"), &trusted), "1.2.3.4".parse().ok());
        // Garbage ends the believable part.
        assert_eq!(client_ip(Some(proxy), &xff("1.2.3.4, junk"), &trusted), Some(proxy));
        assert!(TrustedProxies::try_from(vec!["not-an-ip".to_owned()]).is_err());
    }
}
