use netlink_packet_core::Nla;

use super::*;

/// An IPv4 UDP entry as the kernel (6.18) dumped it: original 10.0.0.1:40000 ->
/// 10.96.0.10:53, reply from 10.244.1.5:5353 (DNATed), with status, timeout,
/// mark, id, use and the `CTA_SYNPROXY` block.
const KERNEL_V4: &[u8] = &[
    0xc0, 0x00, 0x00, 0x00, 0x00, 0x01, 0x22, 0x00, 0x01, 0x00, 0x00, 0x00, 0xed, 0x1b, 0x00, 0x00,
    0x02, 0x00, 0x00, 0x00, 0x34, 0x00, 0x01, 0x80, 0x14, 0x00, 0x01, 0x80, 0x08, 0x00, 0x01, 0x00,
    0x0a, 0x00, 0x00, 0x01, 0x08, 0x00, 0x02, 0x00, 0x0a, 0x60, 0x00, 0x0a, 0x1c, 0x00, 0x02, 0x80,
    0x05, 0x00, 0x01, 0x00, 0x11, 0x00, 0x00, 0x00, 0x06, 0x00, 0x02, 0x00, 0x9c, 0x40, 0x00, 0x00,
    0x06, 0x00, 0x03, 0x00, 0x00, 0x35, 0x00, 0x00, 0x34, 0x00, 0x02, 0x80, 0x14, 0x00, 0x01, 0x80,
    0x08, 0x00, 0x01, 0x00, 0x0a, 0xf4, 0x01, 0x05, 0x08, 0x00, 0x02, 0x00, 0x0a, 0x00, 0x00, 0x01,
    0x1c, 0x00, 0x02, 0x80, 0x05, 0x00, 0x01, 0x00, 0x11, 0x00, 0x00, 0x00, 0x06, 0x00, 0x02, 0x00,
    0x14, 0xe9, 0x00, 0x00, 0x06, 0x00, 0x03, 0x00, 0x9c, 0x40, 0x00, 0x00, 0x08, 0x00, 0x03, 0x00,
    0x00, 0x00, 0x00, 0x08, 0x08, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x08, 0x00, 0x0c, 0x00,
    0x24, 0x8b, 0x31, 0xba, 0x08, 0x00, 0x0b, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00, 0x07, 0x00,
    0x00, 0x00, 0x01, 0x2b, 0x1c, 0x00, 0x18, 0x80, 0x08, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x08, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x08, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00,
];

/// An IPv6 UDP entry in zone 7: fd00::1:40000 -> [fd00::10]:53, reply from
/// [fd00::5]:5353.
const KERNEL_V6: &[u8] = &[
    0xf8, 0x00, 0x00, 0x00, 0x00, 0x01, 0x22, 0x00, 0x01, 0x00, 0x00, 0x00, 0xed, 0x1b, 0x00, 0x00,
    0x0a, 0x00, 0x00, 0x00, 0x4c, 0x00, 0x01, 0x80, 0x2c, 0x00, 0x01, 0x80, 0x14, 0x00, 0x03, 0x00,
    0xfd, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
    0x14, 0x00, 0x04, 0x00, 0xfd, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x10, 0x1c, 0x00, 0x02, 0x80, 0x05, 0x00, 0x01, 0x00, 0x11, 0x00, 0x00, 0x00,
    0x06, 0x00, 0x02, 0x00, 0x9c, 0x40, 0x00, 0x00, 0x06, 0x00, 0x03, 0x00, 0x00, 0x35, 0x00, 0x00,
    0x4c, 0x00, 0x02, 0x80, 0x2c, 0x00, 0x01, 0x80, 0x14, 0x00, 0x03, 0x00, 0xfd, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, 0x14, 0x00, 0x04, 0x00,
    0xfd, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
    0x1c, 0x00, 0x02, 0x80, 0x05, 0x00, 0x01, 0x00, 0x11, 0x00, 0x00, 0x00, 0x06, 0x00, 0x02, 0x00,
    0x14, 0xe9, 0x00, 0x00, 0x06, 0x00, 0x03, 0x00, 0x9c, 0x40, 0x00, 0x00, 0x06, 0x00, 0x12, 0x00,
    0x00, 0x07, 0x00, 0x00, 0x08, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x08, 0x08, 0x00, 0x08, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x08, 0x00, 0x0c, 0x00, 0xcf, 0x81, 0x42, 0x4b, 0x08, 0x00, 0x0b, 0x00,
    0x00, 0x00, 0x00, 0x01, 0x08, 0x00, 0x07, 0x00, 0x00, 0x00, 0x01, 0x2b, 0x1c, 0x00, 0x18, 0x80,
    0x08, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x08, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x08, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00,
];

fn tuple(src: &str, sport: u16, dst: &str, dport: u16) -> Tuple {
    Tuple {
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        src_port: sport,
        dst_port: dport,
    }
}

/// The crate's own decoder, used as the reference for ours.
fn reference_decode(message: &[u8]) -> Option<Entry> {
    let parsed = NetlinkMessage::<NetfilterMessage>::deserialize(message).ok()?;
    let NetlinkPayload::InnerMessage(m) = parsed.payload else {
        return None;
    };
    let netlink_packet_netfilter::NetfilterMessageInner::Conntrack(ConntrackMessage::New(attrs)) =
        m.inner
    else {
        return None;
    };
    let tuple_of = |t: &[CtTuple]| -> Option<(u8, Tuple)> {
        let (mut src, mut dst, mut proto, mut sport, mut dport) = (None, None, None, None, None);
        for part in t {
            match part {
                CtTuple::Ip(ips) => {
                    for ip in ips {
                        match ip {
                            IPTuple::SourceAddress(a) => src = Some(*a),
                            IPTuple::DestinationAddress(a) => dst = Some(*a),
                            _ => {}
                        }
                    }
                }
                CtTuple::Proto(ps) => {
                    for p in ps {
                        match p {
                            ProtoTuple::Protocol(n) => proto = Some(u8::from(*n)),
                            ProtoTuple::SourcePort(p) => sport = Some(*p),
                            ProtoTuple::DestinationPort(p) => dport = Some(*p),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        Some((
            proto?,
            Tuple {
                src: src?,
                dst: dst?,
                src_port: sport?,
                dst_port: dport?,
            },
        ))
    };
    let (mut original, mut reply, mut zone, mut id, mut timeout) = (None, None, 0, None, None);
    for a in &attrs {
        match a {
            ConntrackAttribute::CtaTupleOrig(t) => original = tuple_of(t),
            ConntrackAttribute::CtaTupleReply(t) => reply = tuple_of(t),
            ConntrackAttribute::CtaTimeout(t) => timeout = Some(*t),
            ConntrackAttribute::Other(nla) if nla.kind() == CTA_ID => {
                let mut b = [0; 4];
                nla.emit_value(&mut b);
                id = Some(u32::from_be_bytes(b));
            }
            ConntrackAttribute::Other(nla) if nla.kind() == CTA_ZONE => {
                let mut b = [0; 2];
                nla.emit_value(&mut b);
                zone = u16::from_be_bytes(b);
            }
            _ => {}
        }
    }
    let ((proto, original), (_, reply)) = (original?, reply?);
    Some(Entry {
        protocol: protocol_from_number(proto)?,
        original,
        reply,
        zone,
        id,
        timeout,
        tcp_state: None,
    })
}

/// Kernel messages decode to the flow `conntrack -L` shows, with id, zone and
/// timeout, and our decoder agrees with the crate's.
#[test]
fn kernel_messages_decode() {
    let Reply::Entry(v4) = parse_reply(KERNEL_V4) else {
        panic!("{:?}", parse_reply(KERNEL_V4));
    };
    assert_eq!(v4.protocol, Protocol::Udp);
    assert_eq!(v4.original, tuple("10.0.0.1", 40000, "10.96.0.10", 53));
    assert_eq!(v4.reply, tuple("10.244.1.5", 5353, "10.0.0.1", 40000));
    assert_eq!(
        (v4.zone, v4.id, v4.timeout),
        (0, Some(0x248b31ba), Some(299))
    );
    assert_eq!(reference_decode(KERNEL_V4), Some(v4));

    let Reply::Entry(v6) = parse_reply(KERNEL_V6) else {
        panic!("{:?}", parse_reply(KERNEL_V6));
    };
    assert_eq!(v6.original, tuple("fd00::1", 40000, "fd00::10", 53));
    assert_eq!(v6.reply, tuple("fd00::5", 5353, "fd00::1", 40000));
    assert_eq!((v6.zone, v6.id), (7, Some(0xcf81424b)));
    assert_eq!(v6.family(), IpFamily::V6);
    assert_eq!(reference_decode(KERNEL_V6), Some(v6));
}

/// The dump request asks for one family and protocol, with the filter
/// attribute flagged nested as the kernel requires.
#[test]
fn dump_request_layout() {
    let b = dump_request(IpFamily::V6, Protocol::Sctp, 9);
    #[rustfmt::skip]
    let want: &[u8] = &[
        0x30, 0, 0, 0, // length 48
        0x01, 0x01, // CTNETLINK << 8 | GET
        0x01, 0x03, // NLM_F_REQUEST | NLM_F_DUMP
        9, 0, 0, 0, 0, 0, 0, 0, // seq, port
        10, 0, 0, 0, // nfgenmsg: AF_INET6
        0x10, 0, 0x01, 0x80, // CTA_TUPLE_ORIG, nested
        0x0c, 0, 0x02, 0x80, // CTA_TUPLE_PROTO, nested
        0x05, 0, 0x01, 0, 132, 0, 0, 0, // CTA_PROTO_NUM = SCTP
        0x0c, 0, 0x19, 0x80, // CTA_FILTER, nested
        0x08, 0, 0x01, 0, 0x08, 0, 0, 0, // CTA_FILTER_ORIG_FLAGS = PROTO_NUM
    ];
    assert_eq!(b, want);
}

/// A delete carries the original tuple, the zone and the id, and nothing of the
/// reply direction.
#[test]
fn delete_request_carries_tuple_zone_and_id() {
    let Reply::Entry(entry) = parse_reply(KERNEL_V6) else {
        panic!("decodes");
    };
    let mut b = Vec::new();
    push_delete_request(&mut b, &entry, 5);
    let parsed = NetlinkMessage::<NetfilterMessage>::deserialize(&b).unwrap();
    assert_eq!(parsed.header.flags, NLM_F_REQUEST | NLM_F_ACK);
    assert_eq!(parsed.header.sequence_number, 5);
    assert_eq!(parsed.header.message_type, 1 << 8 | 2, "CTNETLINK DELETE");
    let NetlinkPayload::InnerMessage(m) = parsed.payload else {
        panic!("inner message");
    };
    assert_eq!(m.header.family, NetfilterProtoFamily::IPv6);
    let netlink_packet_netfilter::NetfilterMessageInner::Conntrack(ConntrackMessage::Delete(attrs)) =
        m.inner
    else {
        panic!("a delete");
    };
    assert_eq!(attrs.len(), 3, "{attrs:?}");
    assert_eq!(
        attrs[0],
        ConntrackAttribute::CtaTupleOrig(tuple_attributes(Protocol::Udp, &entry.original))
    );
    assert_eq!(
        attrs[1],
        ConntrackAttribute::Other(DefaultNla::new(CTA_ZONE, vec![0, 7]))
    );
    assert_eq!(
        attrs[2],
        ConntrackAttribute::Other(DefaultNla::new(
            CTA_ID,
            0xcf81424bu32.to_be_bytes().to_vec()
        ))
    );
}

/// A create request is a NEW message with both tuples and the timeout: it
/// decodes back to the entry it was made from, in both families.
#[test]
fn create_request_round_trip() {
    for (src, dst, to) in [
        ("10.0.0.1", "10.96.0.10", "10.244.0.9"),
        ("fd00::1", "fd00::10", "fd00::99"),
    ] {
        let entry = Entry::new(
            Protocol::Sctp,
            tuple(src, 1234, dst, 80),
            (to.parse().unwrap(), 8080),
        );
        let mut b = Vec::new();
        push_create_request(&mut b, &entry, 77, 1);
        push_create_request(&mut b, &entry, 77, 2);
        let parts: Vec<_> = messages(&b).collect();
        assert_eq!(parts.len(), 2);
        let first = parts[0].unwrap();
        assert_eq!(
            first.flags,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
        );
        assert_eq!((first.seq, parts[1].unwrap().seq), (1, 2));
        let first = first.bytes;
        let want = Entry {
            timeout: Some(77),
            ..entry
        };
        assert_eq!(parse_reply(first), Reply::Entry(want));
        assert_eq!(reference_decode(first), Some(want));
    }
}

/// ACKs, errors and the end of a dump are told apart, with sequence and errno.
#[test]
fn acks_errors_and_done() {
    let mut ack = Vec::new();
    ack.extend_from_slice(&36u32.to_ne_bytes());
    ack.extend_from_slice(&2u16.to_ne_bytes()); // NLMSG_ERROR
    ack.extend_from_slice(&0x100u16.to_ne_bytes()); // NLM_F_CAPPED
    ack.extend_from_slice(&7u32.to_ne_bytes());
    ack.extend_from_slice(&0u32.to_ne_bytes());
    ack.extend_from_slice(&(-2i32).to_ne_bytes());
    ack.extend_from_slice(&[0; 16]); // the request's header
    assert_eq!(parse_reply(&ack), Reply::Ack { seq: 7, errno: 2 });
    ack[16..20].copy_from_slice(&0i32.to_ne_bytes());
    assert_eq!(parse_reply(&ack), Reply::Ack { seq: 7, errno: 0 });

    let mut done = Vec::new();
    done.extend_from_slice(&20u32.to_ne_bytes());
    done.extend_from_slice(&3u16.to_ne_bytes()); // NLMSG_DONE
    done.extend_from_slice(&2u16.to_ne_bytes());
    done.extend_from_slice(&[0; 8]);
    done.extend_from_slice(&0i32.to_ne_bytes());
    assert_eq!(parse_reply(&done), Reply::Done { errno: 0 });
    done[16..20].copy_from_slice(&(-4i32).to_ne_bytes());
    assert_eq!(parse_reply(&done), Reply::Done { errno: 4 });
}

/// Truncated or corrupted kernel messages never panic: they are skipped, and a
/// datagram whose message length overruns it is reported broken.
#[test]
fn malformed_messages_are_skipped() {
    for cut in 0..KERNEL_V4.len() {
        let mut b = KERNEL_V4[..cut].to_vec();
        if b.len() >= 4 {
            b[..4].copy_from_slice(&(cut as u32).to_ne_bytes());
        }
        let _ = parse_reply(&b);
        let _ = messages(&b).count();
    }
    // Every byte of the attributes set to each of a few nasty values.
    for at in 20..KERNEL_V6.len() {
        for value in [0x00, 0x03, 0xff] {
            let mut b = KERNEL_V6.to_vec();
            b[at] = value;
            match parse_reply(&b) {
                Reply::Entry(e) => assert_eq!(e.protocol, Protocol::Udp),
                Reply::Skipped => {}
                other => panic!("byte {at} = {value}: {other:?}"),
            }
        }
    }
    let mut b = KERNEL_V4.to_vec();
    b[..4].copy_from_slice(&4096u32.to_ne_bytes());
    assert_eq!(messages(&b).collect::<Vec<_>>(), vec![None]);
}
