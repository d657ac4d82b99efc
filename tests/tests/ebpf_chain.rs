//! The eBPF chain end to end: programs built by aya-build, loaded by the
//! dataplane crate, attached in namespaces this test creates, and counting
//! real packets; and the same XDP program under BPF_PROG_TEST_RUN.
//!
//! Privileged: CI runs as root. Each test makes its own namespaces and veth
//! pair with unique names; they are deleted on drop, also when a test fails.

use std::net::UdpSocket;
use std::time::Duration;

use anyhow::Context as _;
use waggle_dataplane::{CounterSlot, Dataplane, TcDirection};
use waggle_tests::{NetNs, VethPair, is_root};

const XDP_PASS: u32 = 2;

#[test]
fn xdp_and_tc_programs_count_real_udp_packets_crossing_a_veth_pair() -> anyhow::Result<()> {
    assert!(is_root(), "this test loads eBPF programs and creates namespaces: run it as root");
    let client = NetNs::new("cli")?;
    let server = NetNs::new("srv")?;
    let veth = VethPair::new(&client, "10.201.0.1/30", &server, "10.201.0.2/30")?;
    const SENT: u64 = 50;

    let (received, xdp_udp, tc_udp, xdp_all) = server.run(|| -> anyhow::Result<_> {
        let mut dp = Dataplane::load()?;
        dp.attach_xdp_counter(&veth.b)?;
        dp.attach_tc_counter(&veth.b, TcDirection::Ingress)?;
        let socket = UdpSocket::bind("10.201.0.2:40000").context("binding the UDP server")?;
        socket.set_read_timeout(Some(Duration::from_millis(500)))?;

        client.run(|| -> anyhow::Result<()> {
            let sender = UdpSocket::bind("10.201.0.1:0")?;
            for i in 0..SENT {
                sender.send_to(format!("packet {i}").as_bytes(), "10.201.0.2:40000")?;
            }
            Ok(())
        })??;

        let mut received = 0u64;
        let mut buf = [0u8; 64];
        while socket.recv_from(&mut buf).is_ok() {
            received += 1;
        }
        let xdp = dp.xdp_counters()?;
        let tc = dp.tc_counters()?;
        Ok((received, xdp.read(CounterSlot::Ipv4Udp)?, tc.read(CounterSlot::Ipv4Udp)?, xdp.read(CounterSlot::All)?))
    })??;

    assert_eq!(received, SENT, "every datagram passed XDP and tc and reached the socket");
    assert_eq!(xdp_udp.packets, SENT, "XDP counted each UDP datagram once");
    assert_eq!(tc_udp.packets, SENT, "tc ingress counted each UDP datagram once");
    assert!(xdp_all.packets >= SENT, "XDP also saw the ARP exchange: {xdp_all:?}");
    assert!(xdp_udp.bytes >= SENT * 42, "byte counts cover at least the headers: {xdp_udp:?}");
    Ok(())
}

#[test]
fn xdp_program_classifies_crafted_frames_under_bpf_prog_test_run() -> anyhow::Result<()> {
    assert!(is_root(), "this test loads eBPF programs: run it as root");
    let mut dp = Dataplane::load()?;

    const REPEAT: u32 = 1000;
    let udp = udp_frame();
    let result = dp.test_run_xdp_counter(&udp, REPEAT)?;
    assert_eq!(result.return_value, XDP_PASS);
    let arp = arp_frame();
    let result = dp.test_run_xdp_counter(&arp, 1)?;
    assert_eq!(result.return_value, XDP_PASS);
    let truncated = &udp[..10];
    let result = dp.test_run_xdp_counter(truncated, 1);
    // The kernel refuses frames shorter than an Ethernet header; either way the
    // program must not count them as IPv4.
    let truncated_ran = result.is_ok();

    let counters = dp.xdp_counters()?;
    let all = counters.read(CounterSlot::All)?;
    let ipv4 = counters.read(CounterSlot::Ipv4)?;
    let ipv4_udp = counters.read(CounterSlot::Ipv4Udp)?;
    assert_eq!(ipv4_udp.packets, u64::from(REPEAT));
    assert_eq!(ipv4_udp.bytes, u64::from(REPEAT) * udp.len() as u64);
    assert_eq!(ipv4.packets, u64::from(REPEAT), "the ARP frame is not IPv4");
    assert_eq!(all.packets, u64::from(REPEAT) + 1 + u64::from(truncated_ran));
    Ok(())
}

/// Ethernet + IPv4 + UDP, 10.0.0.1:1234 → 10.0.0.2:80, 4-byte payload.
fn udp_frame() -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 2]); // dst mac
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 1]); // src mac
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let payload = b"ping";
    let udp_len = 8 + payload.len() as u16;
    let total = 20 + udp_len;
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]); // id, flags, ttl, proto=UDP, csum
    f.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
    f.extend_from_slice(&1234u16.to_be_bytes());
    f.extend_from_slice(&80u16.to_be_bytes());
    f.extend_from_slice(&udp_len.to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

/// A broadcast ARP request.
fn arp_frame() -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 1]);
    f.extend_from_slice(&0x0806u16.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 10, 0, 0, 1]);
    f.extend_from_slice(&[0, 0, 0, 0, 0, 0, 10, 0, 0, 2]);
    f
}
