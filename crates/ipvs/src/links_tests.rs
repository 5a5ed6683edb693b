//! Unit tests of `links`: the address filter, name checks, request bytes and
//! answer decoding (no socket).

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// Loopback and IPv6 link-local addresses are left out, IPv4 link-local
/// ones are not (as upstream's `isValidForSet`); the family must match.
#[test]
fn address_filter() {
    for (address, family, expected) in [
        ("10.96.0.1", IpFamily::V4, true),
        ("169.254.1.1", IpFamily::V4, true),
        ("127.0.0.1", IpFamily::V4, false),
        ("127.1.2.3", IpFamily::V4, false),
        ("10.96.0.1", IpFamily::V6, false),
        ("fd00::1", IpFamily::V6, true),
        ("2001:db8::1", IpFamily::V4, false),
        ("::1", IpFamily::V6, false),
        ("::ffff:127.0.0.1", IpFamily::V6, false),
        ("fe80::1", IpFamily::V6, false),
        ("febf::1", IpFamily::V6, false),
        ("fec0::1", IpFamily::V6, true),
    ] {
        assert_eq!(listed(ip(address), family), expected, "{address} {family}");
    }
}

/// Names the kernel would refuse are refused before asking it.
#[test]
fn interface_names() {
    for good in ["kube-ipvs0", "a", "123456789012345"] {
        assert!(check_name(good).is_ok(), "{good}");
    }
    for bad in [
        "",
        "1234567890123456",
        ".",
        "..",
        "a/b",
        "a:1",
        "a b",
        "a\0",
    ] {
        assert!(
            matches!(check_name(bad), Err(LinkError::InvalidName { .. })),
            "{bad:?}"
        );
    }
}

/// An IPv4 host address request is the bytes `ip addr add 10.96.0.1/32 dev
/// <7>` sends: ifaddrmsg {AF_INET, 32, 0, RT_SCOPE_UNIVERSE, 7}, IFA_LOCAL
/// and IFA_ADDRESS.
#[test]
fn new_ipv4_address_bytes() {
    let message = RouteNetlinkMessage::NewAddress(address_message(7, ip("10.96.0.1"), true));
    let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
    #[rustfmt::skip]
    let expected: Vec<u8> = vec![
        40, 0, 0, 0, 20, 0, 0x05, 0x06, 9, 0, 0, 0, 0, 0, 0, 0, // nlmsghdr
        2, 32, 0, 0, 7, 0, 0, 0, // ifaddrmsg
        8, 0, 2, 0, 10, 96, 0, 1, // IFA_LOCAL
        8, 0, 1, 0, 10, 96, 0, 1, // IFA_ADDRESS
    ];
    assert_eq!(encode(message, flags, 9), expected);
}

/// A new IPv6 address asks for no duplicate address detection, in the
/// header and in IFA_FLAGS (which the kernel reads first); a deletion
/// carries no flags.
#[test]
fn new_ipv6_address_bytes() {
    let message = address_message(3, ip("fd00::1"), true);
    let bytes = encode(RouteNetlinkMessage::NewAddress(message), NLM_F_REQUEST, 1);
    assert_eq!(bytes.len(), 16 + 8 + 20 + 20 + 8);
    assert_eq!(&bytes[16..24], &[10, 128, 2, 0, 3, 0, 0, 0]);
    assert_eq!(&bytes[64..72], &[8, 0, 8, 0, 2, 0, 0, 0]);
    let delete = address_message(3, ip("fd00::1"), false);
    assert!(delete.header.flags.is_empty());
    assert_eq!(delete.attributes.len(), 2);
}

/// A dummy device request names the device and its kind, and leaves it down.
#[test]
fn new_dummy_bytes() {
    let bytes = encode(new_dummy_request("kube-ipvs0"), NLM_F_REQUEST, 1);
    let parsed = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes)
        .unwrap_or_else(|e| panic!("{e}"));
    let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) = parsed.payload else {
        panic!("not a NewLink: {parsed:?}");
    };
    assert!(link.header.flags.is_empty());
    assert_eq!(link_kind(&link), Some(InfoKind::Dummy));
    assert!(
        link.attributes
            .contains(&LinkAttribute::IfName("kube-ipvs0".into()))
    );
}

fn frame(message_type: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let length = (NETLINK_HEADER_LEN + payload.len()) as u32;
    let mut out = Vec::new();
    out.extend_from_slice(&length.to_ne_bytes());
    out.extend_from_slice(&message_type.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize(out.len().next_multiple_of(4), 0);
    out
}

fn new_address(index: u32, address: &str) -> Vec<u8> {
    let bytes = encode(
        RouteNetlinkMessage::NewAddress(address_message(index, ip(address), false)),
        0,
        0,
    );
    bytes[NETLINK_HEADER_LEN..].to_vec()
}

/// A dump is read up to NLMSG_DONE across datagrams; messages of other
/// requests and undecodable ones are skipped; DUMP_INTR is noted.
#[test]
fn dump_answers() {
    let mut answer = Answer::default();
    let mut first = frame(20, 2, 5, &new_address(1, "10.0.0.1"));
    first.extend(frame(20, 2, 4, &new_address(2, "10.0.0.2")));
    first.extend(frame(20, 2, 5, &[1, 2]));
    assert_eq!(absorb(&first, 5, &mut answer), Ok(false));
    let mut second = frame(20, 2 | NLM_F_DUMP_INTR, 5, &new_address(3, "10.0.0.3"));
    second.extend(frame(NLMSG_DONE, 2, 5, &0i32.to_ne_bytes()));
    assert_eq!(absorb(&second, 5, &mut answer), Ok(true));
    let addresses: Vec<_> = answer
        .messages
        .iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewAddress(a) => Some((a.header.index, address_of(a)?)),
            _ => None,
        })
        .collect();
    assert_eq!(addresses, [(1, ip("10.0.0.1")), (3, ip("10.0.0.3"))]);
    assert!(answer.interrupted && answer.undecodable.is_some() && answer.errno == 0);
}

/// An error ACK gives its errno and the kernel's extended-ACK text, with the
/// request echoed whole or capped to its header.
#[test]
fn error_answers() {
    let request = frame(16, 5, 7, &[0; 16]);
    let text = b"Unknown device type\0";
    let mut tlv = Vec::new();
    tlv.extend_from_slice(&((4 + text.len()) as u16).to_ne_bytes());
    tlv.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
    tlv.extend_from_slice(text);
    tlv.resize(tlv.len().next_multiple_of(4), 0);
    for (flags, echoed) in [
        (
            NLM_F_CAPPED | NLM_F_ACK_TLVS,
            &request[..NETLINK_HEADER_LEN],
        ),
        (NLM_F_ACK_TLVS, &request[..]),
    ] {
        let mut payload = (-libc::EOPNOTSUPP).to_ne_bytes().to_vec();
        payload.extend_from_slice(echoed);
        payload.extend_from_slice(&tlv);
        let mut answer = Answer::default();
        let datagram = frame(NLMSG_ERROR, flags, 7, &payload);
        assert_eq!(absorb(&datagram, 7, &mut answer), Ok(true));
        assert_eq!(answer.errno, libc::EOPNOTSUPP);
        assert_eq!(answer.message.as_deref(), Some("Unknown device type"));
    }
    // A plain ACK, and a frame whose length runs past the datagram.
    let mut answer = Answer::default();
    let mut payload = 0i32.to_ne_bytes().to_vec();
    payload.extend_from_slice(&request[..NETLINK_HEADER_LEN]);
    let ack = frame(NLMSG_ERROR, NLM_F_CAPPED, 8, &payload);
    assert_eq!(absorb(&ack, 8, &mut answer), Ok(true));
    assert_eq!((answer.errno, answer.message), (0, None));
    assert!(absorb(&ack[..20], 8, &mut Answer::default()).is_err());
}
