#!/usr/bin/env python3
"""Write the seed corpus of the fuzz targets into fuzz/corpus/<target>/ (gitignored).

From the shared golden captures (CLOUDRACK_CAPTURES, default ../shared/captures beside the
repository): every OpenFlow message (each TCP direction reassembled and split by the 8-byte
header's length) for ofp_switch and ofp_controller, each direction's whole stream for
ofp_controller, every GRE packet (the IPv4 packet) for gre_decap and its inner Ethernet frame
for forward. Plus hand-made seeds: TCCS messages, PACKET_IN / FLOW_MOD / PACKET_OUT in Cloud
Rack's own shape, offloaded GRE, and for forward an ARP broadcast and TCP/UDP super-frames with
virtio-net headers.

Standard library only. Files are named by the SHA-1 of their content, as libFuzzer names what
it adds, so running this again adds nothing twice.
"""

import hashlib
import os
import struct
import sys
from pathlib import Path

FUZZ_DIR = Path(__file__).resolve().parent
REPO = FUZZ_DIR.parent
TARGETS = ("gre_decap", "forward", "ofp_switch", "ofp_controller")


def captures_dir():
    d = os.environ.get("CLOUDRACK_CAPTURES")
    path = Path(d) if d else REPO.parent / "shared" / "captures"
    if not path.is_dir():
        sys.exit(f"seeds.py: capture directory {path} is missing; set CLOUDRACK_CAPTURES")
    return path


# --------------------------------------------------------------------------------------------
# pcap


def read_pcap(path):
    """(linktype, [frame bytes]) of a classic pcap file, either byte order."""
    data = path.read_bytes()
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        end = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        end = ">"
    else:
        sys.exit(f"seeds.py: {path} is not a classic pcap file")
    linktype = struct.unpack(end + "I", data[20:24])[0] & 0xFFFF
    frames, off = [], 24
    while off + 16 <= len(data):
        incl = struct.unpack(end + "I", data[off + 8 : off + 12])[0]
        frames.append(data[off + 16 : off + 16 + incl])
        off += 16 + incl
    return linktype, frames


def ipv4_of(linktype, frame):
    """The IPv4 packet in a frame (Ethernet or Linux cooked, 802.1Q tags skipped), or None."""
    if linktype == 1:
        ethertype, rest = struct.unpack(">H", frame[12:14])[0], frame[14:]
    elif linktype == 113:
        ethertype, rest = struct.unpack(">H", frame[14:16])[0], frame[16:]
    elif linktype == 276:
        ethertype, rest = struct.unpack(">H", frame[0:2])[0], frame[20:]
    else:
        sys.exit(f"seeds.py: unsupported pcap link type {linktype}")
    while ethertype in (0x8100, 0x88A8) and len(rest) >= 4:
        ethertype, rest = struct.unpack(">H", rest[2:4])[0], rest[4:]
    if ethertype != 0x0800 or len(rest) < 20:
        return None
    total = struct.unpack(">H", rest[2:4])[0]
    return rest[:total]


def tcp_streams(packets):
    """{(src, sport, dst, dport): bytes} with each direction reassembled by sequence number."""
    segments = {}
    for ip in packets:
        if ip[9] != 6:
            continue
        ihl = (ip[0] & 0x0F) * 4
        tcp = ip[ihl:]
        sport, dport, seq = struct.unpack(">HHI", tcp[:8])
        off = (tcp[12] >> 4) * 4
        syn = tcp[13] & 0x02 != 0
        key = (ip[12:16], sport, ip[16:20], dport)
        segments.setdefault(key, []).append((seq, syn, tcp[off:]))
    streams = {}
    for key, segs in segments.items():
        syns = [s for s, syn, _ in segs if syn]
        data_segs = [(s, p) for s, _, p in segs if p]
        if not data_segs:
            continue
        base = (syns[0] + 1) & 0xFFFFFFFF if syns else data_segs[0][0]
        stream = b""
        for rel, payload in sorted(((s - base) & 0xFFFFFFFF, p) for s, p in data_segs):
            if rel > len(stream):
                break  # a gap: keep what is contiguous
            stream += payload[len(stream) - rel :]
        streams[key] = stream
    return streams


def split_openflow(stream):
    msgs = []
    while len(stream) >= 8:
        length = struct.unpack(">H", stream[2:4])[0]
        if length < 8 or length > len(stream):
            break
        msgs.append(stream[:length])
        stream = stream[length:]
    return msgs


# --------------------------------------------------------------------------------------------
# OpenFlow 1.3 and TCCS, enough for a few seeds in Cloud Rack's own shape

OFPT_EXPERIMENTER, OFPT_PACKET_IN, OFPT_FLOW_REMOVED, OFPT_PACKET_OUT, OFPT_FLOW_MOD = 4, 10, 11, 13, 14
OFPT_BARRIER_REPLY, OFPT_MULTIPART_REQUEST = 21, 18
TCCS_EXPERIMENTER = 0x00C10DAC
OFPP_CONTROLLER, OFPP_FLOOD, OFPP_ANY, OFP_NO_BUFFER = 0xFFFFFFFD, 0xFFFFFFFB, 0xFFFFFFFF, 0xFFFFFFFF


def ofp(typ, body, xid):
    return struct.pack(">BBHI", 4, typ, 8 + len(body), xid) + body


def pad8(b):
    return b + bytes(-len(b) % 8)


def oxm(field, value):
    return struct.pack(">HBB", 0x8000, field << 1, len(value)) + value


def oxm_in_port(port):
    return oxm(0, struct.pack(">I", port))


def oxm_eth_dst(mac):
    return oxm(3, mac)


def oxm_tunnel_id(vnet):
    return oxm(38, struct.pack(">Q", vnet))


def match(*oxms):
    fields = b"".join(oxms)
    return pad8(struct.pack(">HH", 1, 4 + len(fields)) + fields)


def action_output(port):
    return struct.pack(">HHIH6x", 0, 16, port, 0xFFFF if port == OFPP_CONTROLLER else 0)


def action_set_tunnel(vnet):
    f = oxm_tunnel_id(vnet)
    return pad8(struct.pack(">HH", 25, len(pad8(b"\0" * 4 + f))) + f)


def apply_actions(*actions):
    acts = b"".join(actions)
    return struct.pack(">HH4x", 4, 8 + len(acts)) + acts


def packet_in(in_port, vnet, frame, xid=0):
    body = struct.pack(">IHBBQ", OFP_NO_BUFFER, len(frame), 0, 0, 2**64 - 1)
    body += match(oxm_in_port(in_port), oxm_tunnel_id(vnet)) + b"\0\0" + frame
    return ofp(OFPT_PACKET_IN, body, xid)


def flow_mod(command, vnet, mac, out_port, xid=0, table_id=0):
    body = struct.pack(">QQBBHHHIIIH2x", 0xC10D << 48, 0, table_id, command, 0, 0, 100, OFP_NO_BUFFER, OFPP_ANY,
                       OFPP_ANY, 1)
    body += match(oxm_tunnel_id(vnet), oxm_eth_dst(mac))
    if out_port is not None:
        body += apply_actions(action_output(out_port))
    return ofp(OFPT_FLOW_MOD, body, xid)


def packet_out(vnet, port, frame, xid=0):
    acts = action_set_tunnel(vnet) + action_output(port)
    body = struct.pack(">IIH6x", OFP_NO_BUFFER, OFPP_CONTROLLER, len(acts)) + acts + frame
    return ofp(OFPT_PACKET_OUT, body, xid)


def flow_removed(vnet, mac, xid=0):
    body = struct.pack(">QHBBIIHHQQ", 0xC10D << 48, 100, 0, 0, 5, 0, 300, 0, 1, 60)
    return ofp(OFPT_FLOW_REMOVED, body + match(oxm_tunnel_id(vnet), oxm_eth_dst(mac)), xid)


def flow_stats_request(xid=0):
    body = struct.pack(">HH4x", 1, 0) + struct.pack(">B3xII4xQQ", 0xFF, OFPP_ANY, OFPP_ANY, 0, 0) + match()
    return ofp(OFPT_MULTIPART_REQUEST, body, xid)


def tccs(exp_type, record, xid=0):
    return ofp(OFPT_EXPERIMENTER, struct.pack(">II", TCCS_EXPERIMENTER, exp_type) + record, xid)


def ip4(a, b, c, d):
    return bytes([a, b, c, d])


def tccs_seeds():
    v = bytes([1, 0, 0, 0])
    remote, dpid = ip4(198, 18, 0, 2), struct.pack(">Q", 2)
    return [
        tccs(1, v + ip4(198, 18, 0, 1) + struct.pack(">Q", 1) + bytes([2, 0, 0, 0, 1, 1]) + b"\0\0", 2),
        tccs(2, v + remote + dpid + struct.pack(">III4x", 5, 0x4000, 60), 3),
        tccs(3, v + remote + struct.pack(">II", 5, 0x4000), 4),
        tccs(4, v + remote + struct.pack(">IIQ", 5, 0x4000, 61_000), 5),
        tccs(5, bytes([1, 1, 0, 0]) + remote + dpid + struct.pack(">III4x", 5, 0x7000, 0), 6),
        tccs(6, v + struct.pack(">II4x", 1, 5), 7),
        tccs(7, bytes([1, 3, 0, 0]) + struct.pack(">IQ", 5, 1) + MAC_A + b"\0\0" + struct.pack(">I4x", 1), 8),
        tccs(8, bytes([1, 1, 0, 0]) + struct.pack(">II", 1, 0) + MAC_A + bytes(6), 9),
    ]


# --------------------------------------------------------------------------------------------
# Ethernet frames and virtio-net headers

MAC_A = bytes([2, 0, 0, 0, 0, 0xA])
MAC_B = bytes([2, 0, 0, 0, 0, 0xB])
BCAST = b"\xff" * 6


def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f">{len(data) // 2}H", data))
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ipv4_header(proto, src, dst, payload_len, ident=1):
    h = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + payload_len, ident, 0x4000, 64, proto, 0, src, dst)
    return h[:10] + struct.pack(">H", csum(h)) + h[12:]


def arp_broadcast():
    arp = struct.pack(">HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, MAC_A, ip4(10, 0, 0, 1), bytes(6), ip4(10, 0, 0, 2))
    return BCAST + MAC_A + b"\x08\x06" + arp + bytes(18)


def tcp4_frame(payload, src_mac=MAC_A, dst_mac=MAC_B, vlan=None):
    src, dst = ip4(10, 0, 0, 1), ip4(10, 0, 0, 2)
    tcp_len = 20 + len(payload)
    pseudo = src + dst + struct.pack(">BBH", 0, 6, tcp_len)
    # CHECKSUM_PARTIAL, as a guest hands it over: the field holds the folded pseudo-header sum.
    partial = ~csum(pseudo) & 0xFFFF
    tcp = struct.pack(">HHIIBBHHH", 40000, 5201, 1_000_000, 77, 5 << 4, 0x18, 65000, partial, 0)
    eth = dst_mac + src_mac + (b"\x81\x00" + struct.pack(">H", vlan) if vlan is not None else b"") + b"\x08\x00"
    return eth + ipv4_header(6, src, dst, tcp_len) + tcp + payload


def tcp6_frame(payload):
    src, dst = bytes([0xFD] + [0] * 14 + [1]), bytes([0xFD] + [0] * 14 + [2])
    tcp = struct.pack(">HHIIBBHHH", 1, 2, 5, 0, 5 << 4, 0x10, 1000, 0, 0)
    ip6 = struct.pack(">IHBB", 6 << 28, 20 + len(payload), 6, 64) + src + dst
    return MAC_B + MAC_A + b"\x86\xdd" + ip6 + tcp + payload


def udp4_frame(payload):
    src, dst = ip4(10, 0, 0, 1), ip4(10, 0, 0, 2)
    udp = struct.pack(">HHHH", 7, 9, 8 + len(payload), 0)
    return MAC_B + MAC_A + b"\x08\x00" + ipv4_header(17, src, dst, len(udp) + len(payload)) + udp + payload


def vnet_hdr(flags=0, gso_type=0, hdr_len=0, gso_size=0, csum_start=0, csum_offset=0):
    return struct.pack("<BBHHHH", flags, gso_type, hdr_len, gso_size, csum_start, csum_offset)


def forward_seed(ingress, max_frame, vnet, frame):
    """The forward target's input: ingress byte, frame size limit (LE u16), virtio-net header."""
    return bytes([ingress]) + struct.pack("<H", max_frame) + vnet + frame


def forward_seeds():
    data = bytes(i * 7 % 251 for i in range(3000))
    tcp_gso = vnet_hdr(1, 1, 54, 1448, 34, 16)
    return [
        # ARP broadcast from a local port (port 1, network 0).
        forward_seed(0, 0, vnet_hdr(), arp_broadcast()),
        # ... and from a static tunnel (port 8).
        forward_seed(2 + 3 * 4, 0, vnet_hdr(), arp_broadcast()),
        # Unicast IPv4/TCP with a partial checksum only.
        forward_seed(0, 0, vnet_hdr(1, 0, 0, 0, 34, 16), tcp4_frame(data[:100])),
        # A TCP super-frame: segmented to a 1514-byte MTU, split into 2-segment pieces.
        forward_seed(0, 1514, tcp_gso, tcp4_frame(data)),
        forward_seed(1 + 3 * 3, 54 + 2 * 1448, tcp_gso, tcp4_frame(data)),
        forward_seed(0, 0, vnet_hdr(1, 1 | 0x80, 58, 700, 38, 16), tcp4_frame(data[:2000], vlan=5)),
        forward_seed(0, 1500, vnet_hdr(1, 4, 74, 1200, 54, 16), tcp6_frame(data)),
        forward_seed(0, 1000, vnet_hdr(1, 5, 42, 900, 34, 6), udp4_frame(data[:2500])),
    ]


def gre_seeds():
    """Hand-made GRE packets: offloaded super-frame, unkeyed, with sequence, C+K+S."""
    frame = tcp4_frame(bytes(range(256)) * 4)

    def packet(flags, proto, words, payload):
        gre = struct.pack(">HH", flags, proto) + b"".join(struct.pack(">I", w) for w in words) + payload
        return ipv4_header(47, ip4(198, 18, 0, 1), ip4(198, 18, 0, 2), len(gre)) + gre

    out = [
        packet(0x2000, 0x88B5, [3], vnet_hdr(1, 1, 54, 500, 34, 16) + frame),
        packet(0x0000, 0x6558, [], arp_broadcast()),
        packet(0x3000, 0x6558, [7, 1], arp_broadcast()),
    ]
    # C, K and S: the checksum covers the GRE header and payload.
    gre = struct.pack(">HHHHII", 0xB000, 0x6558, 0, 0, 9, 2) + arp_broadcast()
    gre = gre[:4] + struct.pack(">H", csum(gre)) + gre[6:]
    out.append(ipv4_header(47, ip4(198, 18, 0, 1), ip4(198, 18, 0, 2), len(gre)) + gre)
    return out


def two_switches_with_a_reported_tunnel(port_no):
    """For ofp_controller with two registered switches (xid % 2 picks the connection: even is
    switch 1, odd switch 2): switch 1 reports a tunnel to switch 2 (key 7) on `port_no`, A shows
    up on switch 1, B on switch 2 sends to A, so the controller makes a tunnel for network 0."""
    report = tccs(5, bytes([1, 0, 0, 0]) + ip4(198, 18, 0, 2) + struct.pack(">QIII4x", 2, 7, port_no, 0), 2)
    learn_a = packet_in(1, 0, arp_broadcast(), 4)
    b_to_a = packet_in(1, 0, tcp4_frame(b"x", MAC_B, MAC_A), 1)
    return report + learn_a + b_to_a


def boundary_seeds():
    """Inputs at the largest sizes the code accepts, which libFuzzer, growing inputs from a few
    KB, would not reach by itself: {target: [seed]}."""
    big = 65535  # the largest OpenFlow message, and IPv4 packet
    max_offload_frame = 65535 - 28 - 10  # vswitch tunnel::MAX_OFFLOAD_FRAME

    def payload_of(n):
        return bytes(i * 13 % 251 for i in range(n))

    # PACKET_IN: header 8, fixed 16, match (in_port + tunnel_id) 24, pad 2, then the frame.
    unknown_dst = bytes([2, 0, 0, 0, 0, 0x77]) + MAC_A + b"\x08\x00"
    pin_unicast = packet_in(1, 0, unknown_dst + payload_of(big - 50 - 14), 2)
    pin_bcast = packet_in(1, 0, BCAST + MAC_A + b"\x08\x00" + payload_of(big - 50 - 14), 2)
    # PACKET_OUT: header 8, fixed 16, actions 32, then the frame.
    pout = packet_out(5, OFPP_FLOOD, BCAST + MAC_A + b"\x08\x00" + payload_of(big - 56 - 14), 3)
    echo = ofp(2, payload_of(big - 8), 4)
    assert len(pin_unicast) == len(pin_bcast) == len(pout) == len(echo) == big

    tcp_gso = vnet_hdr(1, 1, 54, 1448, 34, 16)
    # The largest IPv4 TCP super-frame (total length 65 535), too large to cross a tunnel whole.
    frame = tcp4_frame(payload_of(big - 40))
    gre = struct.pack(">HHI", 0x2000, 0x88B5, 3) + tcp_gso + tcp4_frame(payload_of(big - 20 - 8 - 10 - 54))
    return {
        "ofp_switch": [pout, echo],
        # One registered switch (0x04), and two (0x05: the broadcast is relayed to the other).
        # Then two switches where switch 1 reports a tunnel on the last port the controller hands
        # out (after a controller restart), and the controller brings up another tunnel on it.
        "ofp_controller": [
            b"\x04" + pin_unicast,
            b"\x05" + pin_bcast,
            b"\x05" + two_switches_with_a_reported_tunnel(0xDFFF),
        ],
        # Split into pieces that cross a tunnel whole (as the worker does), and segmented.
        "forward": [forward_seed(0, max_offload_frame, tcp_gso, frame)],
        "gre_decap": [ipv4_header(47, ip4(198, 18, 0, 1), ip4(198, 18, 0, 2), len(gre)) + gre],
    }


# --------------------------------------------------------------------------------------------


def main():
    captures = captures_dir()
    seeds = {t: [] for t in TARGETS}

    for pcap in sorted(captures.glob("*.pcap")):
        linktype, frames = read_pcap(pcap)
        packets = [p for p in (ipv4_of(linktype, f) for f in frames) if p is not None]
        for ip in packets:
            if ip[9] != 47:
                continue
            seeds["gre_decap"].append(ip)
            ihl = (ip[0] & 0x0F) * 4
            flags = struct.unpack(">H", ip[ihl : ihl + 2])[0]
            gre_len = 4 + 4 * bin(flags & 0xB000).count("1")
            inner = ip[ihl + gre_len :]
            seeds["forward"].append(forward_seed(1, 0, vnet_hdr(), inner))
        for stream in tcp_streams(packets).values():
            msgs = split_openflow(stream)
            seeds["ofp_switch"].extend(msgs)
            # The controller target's first byte: 1 connection (0x00), or 1 registered switch
            # (0x04), or 3 registered switches and a tick after every message (0x0e).
            seeds["ofp_controller"].append(b"\x00" + b"".join(msgs))
            seeds["ofp_controller"].append(b"\x04" + b"".join(msgs))
            seeds["ofp_controller"].extend(b"\x04" + m for m in msgs)

    frame_a_to_b = tcp4_frame(b"hello")
    own = tccs_seeds() + [
        packet_in(1, 0, arp_broadcast(), 1),
        packet_in(2, 0, frame_a_to_b, 2),
        flow_mod(0, 5, MAC_B, 2, 3),
        flow_mod(0, 5, MAC_B, None, 4),
        flow_mod(1, 5, MAC_B, 3, 5),
        flow_mod(4, 5, MAC_B, None, 6, table_id=0xFF),
        flow_mod(0, 0, bytes(6), OFPP_CONTROLLER, 7),
        packet_out(5, OFPP_FLOOD, arp_broadcast(), 8),
        packet_out(5, 2, frame_a_to_b, 9),
        flow_removed(0, MAC_B, 10),
        flow_stats_request(11),
        ofp(OFPT_BARRIER_REPLY, b"", 12),
    ]
    seeds["ofp_switch"].extend(own)
    seeds["ofp_switch"].append(b"".join(own))
    seeds["ofp_controller"].extend(b"\x04" + m for m in own)
    seeds["ofp_controller"].append(b"\x04" + b"".join(own))
    # Two registered switches (0x05; message xid % 2 picks the connection): A announces itself on
    # switch 1 (even xid), B answers it from switch 2 (odd), then A talks to B: a tunnel, flows
    # and PACKET_OUTs on both.
    seeds["ofp_controller"].append(b"\x05" + two_switches_with_a_reported_tunnel(0x4005))
    seeds["ofp_controller"].append(
        b"\x05"
        + packet_in(1, 0, arp_broadcast(), 2)
        + packet_in(1, 0, tcp4_frame(b"x", MAC_B, MAC_A), 1)
        + packet_in(1, 0, frame_a_to_b, 4)
    )
    seeds["gre_decap"].extend(gre_seeds())
    seeds["forward"].extend(forward_seeds())
    for target, items in boundary_seeds().items():
        seeds[target].extend(items)

    total = 0
    for target, items in seeds.items():
        out = FUZZ_DIR / "corpus" / target
        out.mkdir(parents=True, exist_ok=True)
        for item in items:
            path = out / hashlib.sha1(item).hexdigest()
            if not path.exists():
                path.write_bytes(item)
                total += 1
        print(f"seeds.py: {target}: {len(set(items))} seeds in {out.relative_to(REPO)}")
    print(f"seeds.py: {total} new files")


if __name__ == "__main__":
    main()
