//! Admission of event bodies (provider webhooks, back-channel logout tokens): these endpoints
//! answer anyone before a signature is checked, so slow or numerous senders must not be able to
//! keep the provider's deliveries out. Each endpoint counts its own readers (a flood of one does
//! not starve the other); one client network (IPv4 address, IPv6 /64) may read only a few
//! bodies at once; a read holds nothing but its own buffer and has a short deadline. Nothing is
//! taken before the request's headers are in, and nothing shared is held while a body trickles.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use crate::forwarding::client_network;

/// Bodies one client network may be sending to one endpoint at once.
pub const PER_ADDRESS: u32 = 4;
/// Bodies an endpoint reads at once in all (a bound on memory: each is at most its limit).
pub const TOTAL: u32 = 1024;

/// Why a body is not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The client network already sends `PER_ADDRESS` bodies: 429.
    ClientBusy,
    /// The endpoint already reads `TOTAL` bodies: 503.
    EndpointBusy,
}

/// The readers of one endpoint.
#[derive(Debug, Default)]
pub struct Intake {
    readers: Mutex<Readers>,
}

#[derive(Debug, Default)]
struct Readers {
    total: u32,
    per_network: HashMap<IpAddr, u32>,
}

/// One admitted reader; dropping it lets the next one in.
#[derive(Debug)]
pub struct Admitted<'a> {
    intake: &'a Intake,
    network: Option<IpAddr>,
}

impl Intake {
    /// Admits a reader for `client` (its address through trusted proxies; `None` when unknown,
    /// counted only in the total).
    pub fn admit(&self, client: Option<IpAddr>) -> Result<Admitted<'_>, Refused> {
        let network = client.map(client_network);
        // locked only for the counts, never across an await
        let mut r = self.readers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if r.total >= TOTAL {
            return Err(Refused::EndpointBusy);
        }
        if let Some(net) = network {
            let mine = r.per_network.entry(net).or_insert(0);
            if *mine >= PER_ADDRESS {
                return Err(Refused::ClientBusy);
            }
            *mine += 1;
        }
        r.total += 1;
        Ok(Admitted { intake: self, network })
    }
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        let mut r = self.intake.readers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        r.total = r.total.saturating_sub(1);
        if let Some(net) = self.network {
            if let Some(n) = r.per_network.get_mut(&net) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    r.per_network.remove(&net);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_network_cannot_take_an_endpoint() {
        let intake = Intake::default();
        let attacker: IpAddr = "203.0.113.7".parse().unwrap();
        let held: Vec<_> = (0..PER_ADDRESS).map(|_| intake.admit(Some(attacker)).unwrap()).collect();
        assert_eq!(intake.admit(Some(attacker)).unwrap_err(), Refused::ClientBusy);
        // the same IPv6 /64 is one client; the provider elsewhere gets in
        let v6 = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let six: Vec<_> = (0..PER_ADDRESS).map(|_| intake.admit(v6("2001:db8::1")).unwrap()).collect();
        assert_eq!(intake.admit(v6("2001:db8::ffff")).unwrap_err(), Refused::ClientBusy);
        assert!(intake.admit(Some("192.0.2.10".parse().unwrap())).is_ok());
        drop(held);
        assert!(intake.admit(Some(attacker)).is_ok(), "a finished read lets the next one in");
        drop(six);
        assert!(intake.readers.lock().unwrap().per_network.is_empty(), "idle networks are forgotten");
    }

    #[test]
    fn the_total_bounds_every_endpoint_reader() {
        let intake = Intake::default();
        let held: Vec<_> = (0..TOTAL)
            .map(|i| intake.admit(Some(IpAddr::from([10, 0, (i / 256) as u8, (i % 256) as u8]))).unwrap())
            .collect();
        assert_eq!(intake.admit(Some("192.0.2.10".parse().unwrap())).unwrap_err(), Refused::EndpointBusy);
        assert_eq!(intake.admit(None).unwrap_err(), Refused::EndpointBusy);
        drop(held);
        assert!(intake.admit(None).is_ok());
    }
}
