//! The zone's SOA serial, asked of the server's authoritative DNS over UDP:
//! the serial grows by one per real change of the records, so its growth
//! over a run of address updates shows that every update changed them.

use crate::Res;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

const TYPE_SOA: u16 = 6;
const CLASS_IN: u16 = 1;

/// The SOA serial of `zone` at the DNS server `server`.
pub fn soa_serial(server: SocketAddr, zone: &str) -> Res<u32> {
    let doing = format!("asking {server} for the SOA of {zone}");
    let socket = UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("{doing}: binding: {e}"))?;
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| format!("{doing}: {e}"))?;
    let id = (std::process::id() & 0xffff) as u16;
    let mut query = Vec::with_capacity(64);
    query.extend_from_slice(&id.to_be_bytes());
    query.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]); // no flags, 1 question
    for label in zone.trim_end_matches('.').split('.') {
        let len = u8::try_from(label.len())
            .ok()
            .filter(|&l| (1..=63).contains(&l))
            .ok_or_else(|| format!("{doing}: bad label {label:?}"))?;
        query.push(len);
        query.extend_from_slice(label.as_bytes());
    }
    query.push(0);
    query.extend_from_slice(&TYPE_SOA.to_be_bytes());
    query.extend_from_slice(&CLASS_IN.to_be_bytes());
    socket.send_to(&query, server).map_err(|e| format!("{doing}: {e}"))?;
    let mut buf = [0u8; 1500];
    let (n, _) = socket.recv_from(&mut buf).map_err(|e| format!("{doing}: {e}"))?;
    parse_serial(&buf[..n], id).map_err(|e| format!("{doing}: {e}"))
}

fn parse_serial(m: &[u8], id: u16) -> Result<u32, String> {
    let u16_at = |i: usize| m.get(i..i + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    if u16_at(0) != Some(id) {
        return Err("answer to another query".into());
    }
    let flags = u16_at(2).ok_or("short answer")?;
    if flags & 0x000f != 0 {
        return Err(format!("rcode {}", flags & 0x000f));
    }
    if u16_at(4) != Some(1) || u16_at(6).unwrap_or(0) == 0 {
        return Err("no answer record".into());
    }
    let mut pos = skip_name(m, 12)? + 4; // question: name, type, class
    pos = skip_name(m, pos)?; // answer: name
    if u16_at(pos) != Some(TYPE_SOA) {
        return Err("first answer is not a SOA".into());
    }
    pos += 10; // type, class, ttl, rdlength
    pos = skip_name(m, pos)?; // mname
    pos = skip_name(m, pos)?; // rname
    m.get(pos..pos + 4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| "SOA record cut short".into())
}

/// The position after the (possibly compressed) name at `pos`.
fn skip_name(m: &[u8], mut pos: usize) -> Result<usize, String> {
    loop {
        let len = *m.get(pos).ok_or("name runs past the end")?;
        match len {
            0 => return Ok(pos + 1),
            l if l & 0xc0 == 0xc0 => return Ok(pos + 2),
            l => pos += 1 + usize::from(l),
        }
    }
}
