//! `keyswap exec`'s DNS responder (SPEC §12): every name asked for gets an address of keyswap's
//! own (from 198.18.0.0/15, the range set aside for benchmarks, never routed), so that the
//! connection that follows comes to keyswap whatever the name, and the address names the host.
//! The allocation is the binding the transparent listener checks; the real resolution happens
//! when keyswap dials. Wire format by `hickory-proto`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Mutex, PoisonError};

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use tokio::net::UdpSocket;
use tracing::{debug, info};

/// The first address handed out, and how many there are (198.18.0.0/15 without its first and last).
const POOL_START: u32 = u32::from_be_bytes([198, 18, 0, 1]);
const POOL_SIZE: u32 = (1 << 17) - 2;
/// Seconds an answer may be cached: long, as an allocation never changes while keyswap runs.
const TTL: u32 = 3600;

/// Names and the addresses given them, both ways.
#[derive(Debug, Default)]
pub struct Allocations {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    by_name: HashMap<String, Ipv4Addr>,
    by_addr: HashMap<Ipv4Addr, String>,
}

impl Allocations {
    /// The address of `name` (lowercase, without the final dot), given on first ask; `None` when
    /// the pool is spent.
    pub fn allocate(&self, name: &str) -> Option<Ipv4Addr> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(addr) = inner.by_name.get(name) {
            return Some(*addr);
        }
        let n = u32::try_from(inner.by_name.len())
            .ok()
            .filter(|&n| n < POOL_SIZE)?;
        let addr = Ipv4Addr::from(POOL_START + n);
        inner.by_name.insert(name.to_string(), addr);
        inner.by_addr.insert(addr, name.to_string());
        Some(addr)
    }

    /// The name `ip` was given to, if any.
    pub fn name_of(&self, ip: IpAddr) -> Option<String> {
        let IpAddr::V4(v4) = ip.to_canonical() else {
            return None;
        };
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.by_addr.get(&v4).cloned()
    }
}

/// Answers queries on `socket` until the task is dropped. What is not a DNS query is dropped.
pub async fn serve(socket: UdpSocket, allocations: std::sync::Arc<Allocations>) {
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(e) => {
                debug!(error = %e, "dns: receive failed");
                continue;
            }
        };
        match answer(&buf[..n], &allocations) {
            Some(reply) => {
                let _ = socket.send_to(&reply, peer).await;
            }
            None => info!(%peer, bytes = n, "dns: a datagram that is not a DNS query: dropped"),
        }
    }
}

/// The reply to one query message: A records get an allocated address; other types an empty
/// answer (so clients fall back to IPv4); anything but a standard query is refused.
pub fn answer(query: &[u8], allocations: &Allocations) -> Option<Vec<u8>> {
    let request = Message::from_vec(query).ok()?;
    if request.message_type() != MessageType::Query {
        return None;
    }
    let mut reply = Message::new();
    reply
        .set_id(request.id())
        .set_message_type(MessageType::Response)
        .set_op_code(request.op_code())
        .set_recursion_desired(request.recursion_desired())
        .set_recursion_available(true)
        .set_authoritative(true);
    if request.op_code() != OpCode::Query || request.queries().len() != 1 {
        reply.set_response_code(ResponseCode::NotImp);
        return reply.to_vec().ok();
    }
    let question = request.queries()[0].clone();
    let name = question
        .name()
        .to_ascii()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    if question.query_type() == RecordType::A && !name.is_empty() {
        match allocations.allocate(&name) {
            Some(addr) => {
                reply.add_answer(Record::from_rdata(
                    question.name().clone(),
                    TTL,
                    RData::A(A(addr)),
                ));
            }
            None => {
                reply.set_response_code(ResponseCode::ServFail);
            }
        }
    }
    reply.add_query(question);
    reply.to_vec().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;

    fn ask(name: &str, kind: RecordType, a: &Allocations) -> Message {
        let mut q = Message::new();
        q.set_id(7).set_recursion_desired(true);
        q.add_query(Query::query(Name::from_ascii(name).unwrap(), kind));
        Message::from_vec(&answer(&q.to_vec().unwrap(), a).unwrap()).unwrap()
    }

    #[test]
    fn each_name_gets_its_own_address_and_keeps_it() {
        let a = Allocations::default();
        let first = ask("API.example.test.", RecordType::A, &a);
        assert_eq!(first.id(), 7);
        let RData::A(A(ip)) = first.answers()[0].data() else {
            panic!("an A record");
        };
        assert_eq!(*ip, Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(
            a.name_of(IpAddr::V4(*ip)).as_deref(),
            Some("api.example.test")
        );
        let again = ask("api.example.test", RecordType::A, &a);
        assert_eq!(again.answers()[0].data(), first.answers()[0].data());
        let other = ask("other.test", RecordType::A, &a);
        assert_ne!(other.answers()[0].data(), first.answers()[0].data());
        assert!(
            ask("api.example.test", RecordType::AAAA, &a)
                .answers()
                .is_empty()
        );
        assert_eq!(a.name_of("198.18.9.9".parse().unwrap()), None);
    }

    #[test]
    fn what_is_not_a_query_gets_no_answer() {
        let a = Allocations::default();
        assert!(answer(b"\x00\x01hello, not dns", &a).is_none());
        assert!(answer(b"", &a).is_none());
    }
}
