"""One party's side of one RR22 PSI pair, in a process of its own.

Run as `python -m splitrec_core.psi.rr22_worker SPEC`.

SecretFlow's `spu` library runs the protocol (`spu.psi.psi_execute`, `PROTOCOL_RR22`) over its
own brpc link. It runs apart from the party's pipeline process for three reasons: spu brings its
own gRPC/brpc, protobuf and abseil, which should not share a process with TensorFlow's and
Arrow Flight's; a pair that hangs can be killed without killing the party; and a party runs one
pair per feature party at once, each on its own port.

SPEC is a JSON file written by `rr22_pair.run_pair`. The result is a JSON file beside it: the
bytes this process sent and received at its TCP sockets, read from the kernel (`TCP_INFO`) just
before the link closes, since spu's link does not expose its own counters to Python. The worker
ends itself if the party that started it is gone. This module imports only spu and the
standard library.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any

# struct tcp_info (linux/tcp.h): tcpi_bytes_acked, tcpi_bytes_received are u64 at these offsets
_TCP_INFO_BYTES, _BYTES_ACKED_AT = 256, 120


def socket_bytes() -> tuple[int, int]:
    """(sent and acknowledged, received) over every TCP socket this process holds open."""
    sent = received = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if not os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                continue
            sock = socket.socket(fileno=os.dup(int(fd)))
        except OSError:
            continue
        with sock:
            if sock.type != socket.SOCK_STREAM or sock.family not in (socket.AF_INET,
                                                                       socket.AF_INET6):
                continue
            info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_BYTES)
            if len(info) >= _BYTES_ACKED_AT + 16:
                acked, got = struct.unpack_from("<QQ", info, _BYTES_ACKED_AT)
                sent, received = sent + acked, received + got
    return sent, received


def _link(spec: dict[str, Any]) -> Any:
    from spu import libspu

    link = libspu.link
    desc = link.Desc()
    desc.id = spec["session"]
    timeout_ms = int(spec["timeout_s"] * 1000)
    desc.recv_timeout_ms = timeout_ms
    desc.http_timeout_ms = timeout_ms
    # connecting: retry every second; the party ends this process when its wait is over
    desc.connect_retry_interval_ms = 1000
    desc.connect_retry_times = int(spec["timeout_s"]) + 10
    desc.throttle_window_size = 0
    for name, address in spec["parties"]:
        desc.add_party(name, address)
    tls = spec.get("tls")
    if tls:
        desc.enable_ssl = True
        for options in (desc.client_ssl_opts, desc.server_ssl_opts):
            options.cert.certificate_path = tls["cert"]
            options.cert.private_key_path = tls["key"]
            options.verify.ca_file_path = tls["ca"]
            options.verify.verify_depth = 1
    return link.create_brpc(desc, spec["rank"])


def run(spec: dict[str, Any]) -> None:
    """Run the pair's PSI as `spec` says and write its result file."""
    from spu import psi

    context = _link(spec)
    Path(spec["connected"]).touch()  # the party stops waiting for the peer to come up
    config = psi.PsiExecuteConfig(
        protocol_conf=psi.PsiProtocolConfig(
            protocol=psi.PsiProtocol.PROTOCOL_RR22, receiver_rank=0, broadcast_result=True),
        input_params=psi.InputParams(path=spec["input"], selected_keys=[spec["key"]],
                                     keys_unique=True),
        output_params=psi.OutputParams(path=spec["output"], disable_alignment=False),
    )
    psi.psi_execute(config, context)
    sent, received = socket_bytes()
    Path(spec["result"]).write_text(json.dumps({"sent_bytes": sent, "received_bytes": received}))
    try:  # the pair is done: a peer that closed first may make closing fail, which is no error
        context.stop_link()
    except RuntimeError:
        pass


def _end_with(parent: int) -> None:
    """End this process once `parent` (the party) has gone: a pair must not outlive its party."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(1)
    threading.Thread(target=watch, daemon=True).start()


def main(spec_path: str) -> None:
    """Read the spec, run the pair, write the result file."""
    _end_with(os.getppid())
    spec = json.loads(Path(spec_path).read_text())
    run(spec)


if __name__ == "__main__":
    main(sys.argv[1])
