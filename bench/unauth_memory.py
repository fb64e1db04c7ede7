"""What unauthenticated peers cost lama-server: memory, and latency for a legitimate client.

    python bench/unauth_memory.py [--senders 16] [--size-mb 600] [--rounds 1] [--json out.json]
    python bench/unauth_memory.py --attacks flood idle nontoken unread [--attack-s 10] [--ipc]

``--attacks`` runs the attacks of issue 21 instead, one after the other against one server,
each for ``--attack-s`` seconds while an authenticated client pings every 20 ms, and prints one
table: the pings' median and max (goal: median <= 10 ms, max <= 100 ms; every ping answered)
and the server's peak RSS. ``flood``: 4 sockets sending 64 KiB messages with a wrong token as
fast as the gate takes them; ``idle``: 600 connections that never send a byte; ``nontoken``:
4 sockets sending messages without a token that fail for another reason (wrong ``v``, not
msgpack, an array); ``unread``: one socket sending tiny wrong-token pings and never reading.

Starts a real lama-server (tiny fixture model, loopback) and measures its idle RSS. Then
``--senders`` pyzmq DEALERs each send ``--rounds`` ``--size-mb`` inpaint messages with a wrong
token back to back, all at once, then wait for the replies, while an authenticated client pings
every 20 ms. Reported: the server's peak RSS (sampled every 5 ms, and the kernel's
VmHWM) against the goal of issue 11 (peak < 1.5 × idle + one valid request's size, i.e. one
``--size-mb`` message), and the pings' median / p99 / max latency (goal < 50 ms). Each ping is
two round trips (``hello`` then ``ping``).

libzmq receives every message whole (it allocates the announced size when the frame header
arrives) before the application sees it, so on a bare ROUTER N peers sending at once hold N
messages in memory. lama-server's token gate (``server/daemon/token_gate.py``) reads only
the first 64 KiB of each message on loopback endpoints, finds the token with a bounded scan and
discards refused ones piecewise; this script shows what that leaves.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import re
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import msgpack
import zmq

REPO = Path(__file__).resolve().parents[1]
TINY = REPO.parent / "shared" / "fixtures" / "lama-golden" / "tiny-lama"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from server_process import start_server  # noqa: E402  (bench/ is not a package)


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    """A memory figure of a process from /proc (Linux), in KiB."""
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.M).group(1))


def unauthenticated_message(size: int) -> bytes:
    """An inpaint request of ``size`` bytes of pixels (RGBA8) carrying a wrong token."""
    side = max(1, int((size / 5) ** 0.5))
    return msgpack.packb({
        "v": 1, "id": "intruder", "op": "inpaint", "token": "not-the-token",
        "image": {"w": side, "h": side, "format": "RGBA8", "data": bytes(side * side * 4)},
        "mask": {"w": side, "h": side, "data": bytes(side * side)},
    }, use_bin_type=True)  # fmt: skip


def sender(endpoint: str, payload: zmq.Frame, rounds: int, start: threading.Barrier,
           codes: list[str]) -> None:  # fmt: skip
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    try:
        start.wait()
        for _ in range(rounds):  # back to back: the server must take in every byte
            sock.send(payload, copy=False)
        for _ in range(rounds):
            while sock.poll(300_000):
                reply = msgpack.unpackb(sock.recv(), raw=False)
                if "ok" in reply:
                    codes.append(reply.get("error", {}).get("code", "ok"))
                    break
            else:
                codes.append("no reply")
        # Stay connected until the last message has left this process (zmq has no signal for
        # it; the refusal of message N comes once its first bytes arrived): one more ping.
        sock.send(msgpack.packb({"v": 1, "id": "end", "op": "ping", "token": "x"}))
        sock.poll(300_000)
    finally:
        sock.close()


def _stats(ms: list[float]) -> dict[str, float] | None:
    if not ms:
        return None
    ms = sorted(ms)
    pick = lambda q: round(ms[min(len(ms) - 1, int(q * len(ms)))], 2)  # noqa: E731
    return {"n": len(ms), "median": pick(0.5), "p99": pick(0.99), "max": round(ms[-1], 2)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--senders", type=int, default=16)
    p.add_argument("--size-mb", type=float, default=600.0)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--quiet-s", type=float, default=5.0, help="pings before the attack")
    p.add_argument("--model", type=Path, default=TINY)
    p.add_argument("--json", type=Path)
    p.add_argument("--attacks", nargs="+", choices=sorted(ATTACKS))
    p.add_argument("--attack-s", type=float, default=10.0)
    p.add_argument("--ipc", action="store_true", help="attack an ipc:// server, not TCP")
    args = p.parse_args(argv)
    sys.path.insert(0, str(REPO))
    if args.attacks:
        return attack_table(args)
    from lama_client.client import LamaClient

    size = int(args.size_mb * 1e6)
    with tempfile.TemporaryDirectory() as tmp:
        proc, endpoint, token, _ = start_server(
            Path(tmp), args.model, "--device", "cpu", "--no-warmup", "--log-level", "warning",
            timeout=120,
        )  # fmt: skip
        try:
            pinger = LamaClient(endpoint, token)
            quiet = _quiet_pings(pinger, args.quiet_s)
            time.sleep(0.5)
            idle = rss_kib(proc.pid)
            attack = _attack(proc.pid, endpoint, pinger, size, args, idle)
            hwm = rss_kib(proc.pid, "VmHWM")
            pinger.close()
        finally:
            proc.terminate()
            proc.wait(30)
    result = _result(args, size, idle, hwm, quiet, attack)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def _quiet_pings(pinger, seconds: float) -> list[float]:
    """The same pings as during the attack, without one: the noise (ms)."""
    quiet = []
    quiet_end = time.monotonic() + seconds
    while time.monotonic() < quiet_end:
        t0 = time.perf_counter()
        pinger.ping()
        quiet.append((time.perf_counter() - t0) * 1000)
        time.sleep(0.02)
    return quiet


def _attack(pid: int, endpoint: str, pinger, size: int, args: argparse.Namespace,
            idle: int) -> dict:  # fmt: skip
    """Run the senders while pinging and sampling the server's RSS; what was measured."""
    payload = zmq.Frame(unauthenticated_message(size))
    start = threading.Barrier(args.senders + 1)
    codes: list[str] = []
    threads = [
        threading.Thread(target=sender, args=(endpoint, payload, args.rounds, start, codes))
        for _ in range(args.senders)
    ]
    for t in threads:
        t.start()
    peak, latencies, slow = idle, [], []
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, rss_kib(pid))
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    start.wait()
    began = time.monotonic()
    while any(t.is_alive() for t in threads):
        t0 = time.perf_counter()
        pinger.ping()
        latencies.append((time.perf_counter() - t0) * 1000)
        slow.extend([(round(time.monotonic() - began, 2), round(latencies[-1], 1))]
                    if latencies[-1] > 20 else [])  # fmt: skip
        time.sleep(0.02)
    elapsed = time.monotonic() - began
    stop.set()
    sampler.join()
    return {"codes": codes, "peak": peak, "latencies": latencies, "slow": slow,
            "elapsed": elapsed}  # fmt: skip


def _result(args: argparse.Namespace, size: int, idle: int, hwm: int, quiet: list[float],
            attack: dict) -> dict:  # fmt: skip
    codes, peak, latencies = attack["codes"], attack["peak"], sorted(attack["latencies"])
    request_kib = size // 1024
    budget = 1.5 * idle + request_kib
    result = {
        "senders": args.senders, "size_mb": args.size_mb, "rounds": args.rounds,
        "replies": {c: codes.count(c) for c in set(codes)}, "attack_s": round(attack["elapsed"], 2),
        "idle_rss_mib": round(idle / 1024, 1), "peak_rss_mib": round(peak / 1024, 1),
        "vm_hwm_mib": round(hwm / 1024, 1), "budget_mib": round(budget / 1024, 1),
        "rss_goal_met": peak < budget,
        "ping_ms_without_attack": _stats(quiet[5:]),
        "pings": len(latencies),
        "ping_ms_during_attack": _stats(latencies),
        "slow_pings_s_ms": attack["slow"][:10],  # (seconds into the attack, ms) of pings > 20 ms
    }  # fmt: skip
    result["ping_goal_met"] = bool(latencies) and latencies[-1] < 50
    return result


# --------------------------------------------------------------------------------------------
# The attacks of issue 21


def _zmtp(endpoint: str):
    from lama_client.client import ZmtpConnection

    return ZmtpConnection(endpoint, 2.0)


def _send_until(endpoint: str, messages: list[bytes], until: float) -> None:
    """Send ``messages`` round and round as fast as the gate takes them; reconnect when it
    hangs up (it closes a connection after a few answers without the token)."""
    while time.monotonic() < until:
        try:
            conn = _zmtp(endpoint)
        except Exception:
            time.sleep(0.01)
            continue
        try:
            while time.monotonic() < until:
                for message in messages:
                    conn.send(message)
        except OSError:
            pass
        finally:
            conn.close()


def _flood(endpoint: str, until: float) -> list[threading.Thread]:
    head = {"v": 1, "id": "intruder", "op": "ping", "token": "not-the-token"}
    message = msgpack.packb({**head, "pad": bytes(65536 - 100)}, use_bin_type=True)
    return [threading.Thread(target=_send_until, args=(endpoint, [message], until))
            for _ in range(4)]  # fmt: skip


def _nontoken(endpoint: str, until: float) -> list[threading.Thread]:
    messages = [msgpack.packb({"v": 2, "id": "a", "op": "ping"}), b"\xc1 not msgpack" * 100,
                msgpack.packb(list(range(1000))), msgpack.packb({"v": 1, "op": 7})]  # fmt: skip
    return [threading.Thread(target=_send_until, args=(endpoint, messages, until))
            for _ in range(4)]  # fmt: skip


def _raw_socket(endpoint: str) -> socket.socket:
    if endpoint.startswith("ipc://"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(endpoint[len("ipc://") :])
        return sock
    host, _, port = endpoint[len("tcp://") :].rpartition(":")
    return socket.create_connection((host.strip("[]"), int(port)))


def _idle(endpoint: str, until: float) -> list[threading.Thread]:
    def hold() -> None:
        socks = [_raw_socket(endpoint) for _ in range(600)]
        time.sleep(max(until - time.monotonic(), 0))
        for sock in socks:
            sock.close()

    return [threading.Thread(target=hold)]


def _unread(endpoint: str, until: float) -> list[threading.Thread]:
    from lama_client.wire import zmtp_frame, zmtp_greeting, zmtp_ready

    ping = zmtp_frame(msgpack.packb({"v": 1, "id": "p", "op": "ping", "token": "wrong"}))

    def send_never_read() -> None:
        while time.monotonic() < until:
            sock = _raw_socket(endpoint)
            sock.settimeout(0.5)
            try:
                sock.sendall(zmtp_greeting() + zmtp_ready("DEALER"))
                while time.monotonic() < until:
                    sock.sendall(ping * 64)
            except OSError:
                pass  # the gate stopped reading (timeout) or hung up: again
            finally:
                sock.close()

    return [threading.Thread(target=send_never_read)]


ATTACKS = {"flood": _flood, "idle": _idle, "nontoken": _nontoken, "unread": _unread}


def _run_attack(name: str, endpoint: str, until: float) -> None:
    threads = ATTACKS[name](endpoint, until)
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _one_attack(name: str, pid: int, endpoint: str, pinger, seconds: float) -> dict:
    """Run one attack (in its own process: its threads must not take the pinger's GIL) while
    pinging and sampling the server's RSS."""
    until = time.monotonic() + seconds
    attacker = multiprocessing.get_context("fork").Process(
        target=_run_attack, args=(name, endpoint, until)
    )
    attacker.start()
    peak, latencies, lost = rss_kib(pid), [], 0
    time.sleep(0.2)  # let the attack get going
    while time.monotonic() < until:
        t0 = time.perf_counter()
        try:
            pinger.ping()
            latencies.append((time.perf_counter() - t0) * 1000)
        except Exception:
            lost += 1
        peak = max(peak, rss_kib(pid))
        time.sleep(0.02)
    attacker.join(30)
    ms = latencies or [float("nan")]
    return {"attack": name, "pings": len(latencies), "lost": lost,
            "median_ms": round(statistics.median(ms), 2), "max_ms": round(max(ms), 2),
            "peak_rss_mib": round(peak / 1024, 1)}  # fmt: skip


def attack_table(args: argparse.Namespace) -> int:
    """The attacks of issue 21 against one server, as one table (and JSON with --json)."""
    from lama_client.client import LamaClient

    with tempfile.TemporaryDirectory() as tmp:
        listen = ["--listen", f"ipc://{tmp}/run/lama.sock"] if args.ipc else []
        proc, endpoint, token, _ = start_server(
            Path(tmp), args.model, "--device", "cpu", "--no-warmup", "--log-level", "warning",
            *listen, timeout=120,
        )  # fmt: skip
        try:
            pinger = LamaClient(endpoint, token, use_pyzmq=False, connect_timeout=5.0)
            quiet = _quiet_pings(pinger, 2.0)
            rows = [{"attack": "none", "pings": len(quiet), "lost": 0,
                     "median_ms": round(statistics.median(quiet), 2),
                     "max_ms": round(max(quiet), 2),
                     "peak_rss_mib": round(rss_kib(proc.pid) / 1024, 1)}]  # fmt: skip
            for name in args.attacks:
                rows.append(_one_attack(name, proc.pid, endpoint, pinger, args.attack_s))
            pinger.close()
        finally:
            proc.terminate()
            proc.wait(30)
    header = ("attack", "pings", "lost", "median ms", "max ms", "peak RSS MiB")
    print(f"{header[0]:10} {header[1]:>6} {header[2]:>5} {header[3]:>10} {header[4]:>8} "
          f"{header[5]:>13}")  # fmt: skip
    for r in rows:
        print(f"{r['attack']:10} {r['pings']:6} {r['lost']:5} {r['median_ms']:10} "
              f"{r['max_ms']:8} {r['peak_rss_mib']:13}")  # fmt: skip
    goal = all(r["lost"] == 0 and r["median_ms"] <= 10 and r["max_ms"] <= 100 for r in rows)
    verdict = "met" if goal else "NOT met"
    print(f"goal (every ping answered, median <= 10 ms, max <= 100 ms): {verdict}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
