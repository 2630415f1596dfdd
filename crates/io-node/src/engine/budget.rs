//! The budget of sessions that have not joined a namespace yet. A session
//! costs memory from its handshake on, but only a client that joins a
//! namespace is doing anything useful: a flood of handshakes that never
//! continue (cheap to send, from one address) must not fill
//! `max_connections` and lock every real client out. So sessions not yet
//! joined are capped on their own (`max_unjoined`) and per client address
//! (`max_unjoined_per_address`; behind a proxy listed in
//! `trusted_proxies`, the address it forwards); past either, handshakes get
//! 503 and clients retry. The connect timeout bounds how long such a
//! session lasts. A [`Ticket`] holds a session's place until it joins or
//! closes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use http::HeaderMap;

pub(crate) struct Unjoined {
    /// Most per address; 0: no per-address limit.
    per_address: usize,
    /// Most in all.
    total: usize,
    /// Places held, by address, and in all.
    held: Mutex<(HashMap<IpAddr, usize>, usize)>,
    /// Proxies whose `X-Forwarded-For` is believed.
    trusted_proxies: Vec<IpAddr>,
}

/// A session's place in the budget, given back when it is dropped (the
/// session joined a namespace, or closed).
pub(crate) struct Ticket {
    budget: Arc<Unjoined>,
    address: IpAddr,
}

impl Unjoined {
    pub(crate) fn new(per_address: usize, total: usize, trusted_proxies: Vec<IpAddr>) -> Unjoined {
        Unjoined {
            per_address,
            total,
            held: Mutex::default(),
            trusted_proxies,
        }
    }

    /// The client's address: the peer's, or, when the peer is a trusted
    /// proxy, the last address in `X-Forwarded-For` that is not one.
    pub(crate) fn client_address(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.trusted_proxies.contains(&peer) {
            return peer;
        }
        let forwarded = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .filter_map(|part| part.trim().parse::<IpAddr>().ok())
            .collect::<Vec<_>>();
        forwarded
            .into_iter()
            .rev()
            .find(|address| !self.trusted_proxies.contains(address))
            .unwrap_or(peer)
    }

    /// A place for a new session from `address`, if the budget has one.
    pub(crate) fn reserve(self: &Arc<Self>, address: IpAddr) -> Option<Ticket> {
        let mut held = self.lock();
        let (by_address, total) = &mut *held;
        if *total >= self.total {
            return None;
        }
        let mine = by_address.entry(address).or_default();
        if self.per_address > 0 && *mine >= self.per_address {
            return None;
        }
        *mine += 1;
        *total += 1;
        Some(Ticket {
            budget: self.clone(),
            address,
        })
    }

    /// Places held now, in all.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.lock().1
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (HashMap<IpAddr, usize>, usize)> {
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut held = self.budget.lock();
        let (by_address, total) = &mut *held;
        *total = total.saturating_sub(1);
        if let Some(mine) = by_address.get_mut(&self.address) {
            *mine -= 1;
            if *mine == 0 {
                by_address.remove(&self.address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn one_address_cannot_take_the_whole_budget() {
        let budget = Arc::new(Unjoined::new(2, 3, Vec::new()));
        let first = budget.reserve(ip("10.0.0.1")).unwrap();
        let _second = budget.reserve(ip("10.0.0.1")).unwrap();
        assert!(budget.reserve(ip("10.0.0.1")).is_none(), "per address");
        let _other = budget.reserve(ip("10.0.0.2")).unwrap();
        assert!(budget.reserve(ip("10.0.0.3")).is_none(), "in all");
        drop(first);
        assert_eq!(budget.held(), 2);
        assert!(
            budget.reserve(ip("10.0.0.1")).is_some(),
            "a place given back"
        );
    }

    #[test]
    fn forwarded_addresses_count_only_behind_a_trusted_proxy() {
        let budget = Unjoined::new(1, 10, vec![ip("10.0.0.9")]);
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            "1.2.3.4, 5.6.7.8, 10.0.0.9".parse().unwrap(),
        );
        assert_eq!(
            budget.client_address(ip("10.0.0.9"), &headers),
            ip("5.6.7.8")
        );
        assert_eq!(
            budget.client_address(ip("10.0.0.7"), &headers),
            ip("10.0.0.7")
        );
        assert_eq!(
            budget.client_address(ip("10.0.0.9"), &HeaderMap::new()),
            ip("10.0.0.9")
        );
    }
}
