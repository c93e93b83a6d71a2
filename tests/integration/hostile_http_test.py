"""Hostile clients against the OpenAI-compatible HTTP port (--http-listen) of a real cluster (2
workers, an API key): each attack runs bounded in count and time, and while it runs and after it

- a well-behaved neighbour (from 127.0.0.1, with the key) gets a 2-token completion, 200 within
  0.5 s (the worst of the samples taken while the attack runs, and of three after it);
- GET /health answers 200 within 0.2 s (likewise);
- the coordinator's RSS (sampled every 50 ms) stays within 100 MB of its idle size, during and
  after;
- the coordinator CPU the attack costs (CPU time during the attack, less the idle rate and the
  probes' own cost, both measured before any attack) is at most 50 ms per KB the attacker sent;
- the attacker gets the answer the server is meant to give.

The attacks (attackers connect from 127.0.0.2 and up, so per-address caps never hit the neighbour):
1. coded bodies: a gzip bomb (500 KB inflating to 500 MB) and the same as deflate → 415 with an
   OpenAI-shaped error, at once, nothing inflated; the gzip bomb without the API key → 401 or 415;
   oversized bodies: 100 MB chunked → 413 before it is all sent; Content-Length 100 MB → 413 at
   once, no body sent;
2. framing: two different Content-Lengths → 400; Transfer-Encoding chunked with Content-Length →
   400; three pipelined GETs → three 200s in order; an HTTP/1.0 streamed completion → the SSE
   events raw (no chunked encoding) until the server closes, ending in [DONE]; a POST without a
   length → 411; and 16 connections each of: a chunk size of 18 hex digits (400 or closed within
   1 s), a chunk size of -5 (400 within 1 s), a POST without a length (411 within 1 s), a TLS
   ClientHello on the plain port (400 or closed within 1 s);
3. slowloris: 128 connections that send a partial head and a header line every 2 s → each closed
   within 15 s of its connect (the head deadline is 10 s); meanwhile 16 that send a head with
   Content-Length 1000, 10 bytes of body, then a byte every 2 s → each closed within 35 s (the
   request deadline is 30 s);
4. connection caps: 200 idle connections from one address (the per-address cap is 128) → those
   over the cap closed within 1 s of connecting;
5. backlog: 300 valid 2-token completions at once (from 8 addresses) → every one answered (200, or
   429/503 when saturated) within 40 s, and the kernel's ListenOverflows counter does not grow;
6. JSON amplification: 8 bodies at once, each ~6 MB of 2 million empty objects in an ignored field
   → 400 naming the limit; JSON nested 100000 deep in an ignored field → 400.
Then /metrics still answers and SIGTERM ends the job with 0.

Every socket has a timeout and every thread a bounded join, so a server that misbehaves (one that
inflates, queues or hangs) gives FAIL lines, not a hung test. Stdlib only besides the harness.

usage: hostile_http_test.py BIN_DIR SOURCE_DIR WORK_DIR PYTHON_STUBS_DIR   (runs itself under
/usr/bin/python3 where the python3 it was given lacks grpc)
"""
import collections
import errno
import importlib.util
import json
import os
import random
import re
import select
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback
import zlib

NEIGHBOUR_MS, HEALTH_MS, RSS_MB, CPU_MS_PER_KB = 500, 200, 100, 50  # the bounds
PROBE_TIMEOUT_S = 3.0  # a probe that gets nothing by then counts as a failure of that length
NEIGHBOUR_BODY = {"model": "model", "prompt": "Hello", "max_tokens": 2, "temperature": 0}
PORT = 0      # the HTTP API's port, set by main() (or by --probe)
API_KEY = ""  # the key the neighbour sends


# ---------------------------------------------------------------------------------------------
# HTTP over raw sockets: a source address of our choosing, exact bytes on the wire, every wait
# bounded.

Answer = collections.namedtuple("Answer", "status headers body ms error")


def connect(src, timeout):
    """A connection to the API from loopback address `src` (all of 127/8 is routed to lo)."""
    return socket.create_connection(("127.0.0.1", PORT), timeout=timeout, source_address=(src, 0))


class Reader:
    """Reads HTTP/1.x responses from a socket, one after another (pipelining), by a deadline."""

    def __init__(self, sock, deadline):
        self.sock, self.deadline, self.buf = sock, deadline, b""

    def _more(self):
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("deadline")
        self.sock.settimeout(left)
        data = self.sock.recv(1 << 16)
        if not data:
            raise EOFError("closed by the server")
        self.buf += data

    def _take(self, n):
        while len(self.buf) < n:
            self._more()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _line(self):
        while b"\r\n" not in self.buf:
            self._more()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def response(self):
        """(status, headers with lower-case names, body); raises EOFError, OSError, ValueError."""
        while b"\r\n\r\n" not in self.buf:
            self._more()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = b""
            while True:
                size = int(self._line().split(b";")[0], 16)
                if size == 0:
                    while self._line():  # trailers, then the empty line
                        pass
                    break
                body += self._take(size)
                self._take(2)
        elif "content-length" in headers:
            body = self._take(int(headers["content-length"]))
        elif status in (204, 304) or status < 200:
            body = b""
        else:  # HTTP/1.0 style: the body runs until the server closes
            try:
                while True:
                    self._more()
            except EOFError:
                pass
            body, self.buf = self.buf, b""
        return status, headers, body


def failed(t0, e):
    return Answer(None, {}, b"", (time.monotonic() - t0) * 1e3, f"{type(e).__name__}: {e}")


def request(method, path, body=b"", src="127.0.0.1", headers=(), timeout=5.0, auth=True, raw=None):
    """One request on a fresh connection (Connection: close), or `raw` bytes as they are; never
    raises: an Answer with status None and the error when nothing (whole) came back by `timeout`."""
    t0 = time.monotonic()
    if raw is None:
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
        if auth and API_KEY:
            lines.append(f"Authorization: Bearer {API_KEY}")
        if method == "POST":
            lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        raw = ("\r\n".join(lines + list(headers)) + "\r\n\r\n").encode() + body
    try:
        with connect(src, timeout) as s:
            s.sendall(raw)
            status, hdrs, got = Reader(s, t0 + timeout).response()
        return Answer(status, hdrs, got, (time.monotonic() - t0) * 1e3, None)
    except (OSError, EOFError, ValueError, IndexError) as e:
        return failed(t0, e)


def neighbour(timeout=PROBE_TIMEOUT_S):
    return request("POST", "/v1/completions", NEIGHBOUR_BODY, timeout=timeout)


def health(timeout=PROBE_TIMEOUT_S):
    return request("GET", "/health", timeout=timeout, auth=False)


def said(a):
    """An answer in a few words: "415 in 3 ms", "no answer: timeout: deadline (3000 ms)"."""
    return f"{a.status} in {a.ms:.0f} ms" if a.status is not None else f"no answer ({a.error}, {a.ms:.0f} ms)"


def openai_error(a):
    """The error message when the body is OpenAI's error shape ({"error": {"message": ...}}), else None."""
    try:
        e = json.loads(a.body)["error"]
        return e["message"] if isinstance(e, dict) and isinstance(e.get("message"), str) else None
    except (ValueError, KeyError, TypeError):
        return None


def head_bytes(method, path, *headers, auth=True, version="HTTP/1.1"):
    lines = [f"{method} {path} {version}", "Host: 127.0.0.1"]
    if auth and API_KEY:
        lines.append(f"Authorization: Bearer {API_KEY}")
    return ("\r\n".join(lines + list(headers)) + "\r\n\r\n").encode()


def push(src, head, pieces, limit_s):
    """Sends `head` then `pieces` (an iterable of bytes), looking for an answer before each piece:
    stops sending at the answer's first byte, a socket error (the server closed), or limit_s. Then
    reads the answer. Returns (Answer, bytes sent); the answer's ms runs from the connect."""
    t0 = time.monotonic()
    sent = 0
    try:
        s = connect(src, 5)
    except OSError as e:
        return failed(t0, e), 0
    with s:
        try:
            s.settimeout(2)  # a server that stops reading and says nothing: give up on sending
            for piece in [head, *pieces] if isinstance(pieces, list) else _chain(head, pieces):
                if select.select([s], [], [], 0)[0] or time.monotonic() - t0 > limit_s:
                    break
                view = memoryview(piece)
                while view:
                    n = s.send(view)
                    sent += n
                    view = view[n:]
        except OSError:
            pass  # the server closed or reset: its answer, if any, is read below
        try:
            status, hdrs, body = Reader(s, t0 + limit_s + 2).response()
            return Answer(status, hdrs, body, (time.monotonic() - t0) * 1e3, None), sent
        except (OSError, EOFError, ValueError, IndexError) as e:
            return failed(t0, e), sent


def _chain(first, rest):
    yield first
    yield from rest


def open_many(src, n, limit_s=5.0):
    """n connections from `src`, connected in parallel (non-blocking connects); each entry is
    (socket or None, when it connected or failed, error or None). Not connected by limit_s: failed."""
    sel = selectors.DefaultSelector()
    out = [None] * n
    t_start = time.monotonic()
    for i in range(n):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.bind((src, 0))
            err = s.connect_ex(("127.0.0.1", PORT))
        except OSError as e:
            err = e.errno
        if err not in (0, errno.EINPROGRESS):
            out[i] = (None, time.monotonic(), os.strerror(err))
            s.close()
            continue
        sel.register(s, selectors.EVENT_WRITE, i)
    while sel.get_map() and time.monotonic() < t_start + limit_s:
        for key, _ in sel.select(timeout=max(0.0, t_start + limit_s - time.monotonic())):
            s, i = key.fileobj, key.data
            sel.unregister(s)
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                out[i] = (None, time.monotonic(), os.strerror(err))
                s.close()
            else:
                out[i] = (s, time.monotonic(), None)
    for key in list(sel.get_map().values()):
        sel.unregister(key.fileobj)
        key.fileobj.close()
        out[key.data] = (None, time.monotonic(), "connect timed out")
    sel.close()
    return out


def hold_open(conns, first, trickle, every, give_up):
    """Plays a slow client on each connection of open_many: `first` at once, then `trickle` every
    `every` s, until the server answers or closes it, or give_up s after its connect. Returns
    ([(seconds held or None when still open at give_up, answer status or None), ...], bytes sent).
    A connection that failed to connect counts as held 0 s, no status."""
    sel = selectors.DefaultSelector()
    results = [None] * len(conns)
    sent = 0
    live = {}  # index -> (socket, t_connected)
    for i, (s, t0, err) in enumerate(conns):
        if s is None:
            results[i] = (0.0, None)
            continue
        try:
            if first:
                s.sendall(first)  # small: fits the socket buffer at once
                sent += len(first)
        except OSError:
            results[i] = (time.monotonic() - t0, None)
            s.close()
            continue
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, i)
        live[i] = (s, t0)

    def end(i, held, status):
        s, _ = live.pop(i)
        results[i] = (held, status)
        sel.unregister(s)
        s.close()

    next_trickle = time.monotonic() + every
    while live:
        soonest = min(t0 + give_up for _, t0 in live.values())
        wait = min(soonest, next_trickle if trickle else soonest) - time.monotonic()
        for key, _ in sel.select(timeout=max(0.0, wait)):
            i = key.data
            try:
                data = key.fileobj.recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            m = re.match(rb"HTTP/1\.[01] (\d{3})", data)
            end(i, time.monotonic() - live[i][1], int(m.group(1)) if m else None)
        now = time.monotonic()
        if trickle and now >= next_trickle:
            next_trickle = now + every
            for i, (s, t0) in list(live.items()):
                try:
                    sent += s.send(trickle)
                except BlockingIOError:
                    pass
                except OSError:  # closed by the server (seen here before the read)
                    end(i, now - t0, None)
        for i, (s, t0) in list(live.items()):
            if now >= t0 + give_up:
                end(i, None, None)
    sel.close()
    return results, sent


# ---------------------------------------------------------------------------------------------
# The neighbour and /health probes run in their own processes (this file with --probe), so that
# the attackers' Python threads do not delay them through the GIL: what they measure is the server.

def probe_main(port, key, what):
    """Probes `what` (neighbour or health) every 0.25 s until stdin closes, one JSON line per
    probe: [status or null, ms]. The probe in flight when stdin closes still finishes and reports."""
    global PORT, API_KEY, ASAN
    PORT, API_KEY = port, key
    fn = neighbour if what == "neighbour" else health
    while True:
        a = fn()
        print(json.dumps([a.status, round(a.ms, 1)]), flush=True)
        if select.select([sys.stdin], [], [], 0.25)[0]:
            return


def rss_mb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def cpu_s(pid):
    """utime + stime of the whole process (all its threads), in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def listen_overflows():
    with open("/proc/net/netstat") as f:
        lines = f.read().splitlines()
    for names, values in zip(lines[::2], lines[1::2]):
        if names.startswith("TcpExt:"):
            return int(dict(zip(names.split()[1:], values.split()[1:]))["ListenOverflows"])
    return 0


class Baseline:
    """The coordinator at rest, measured once before any attack: RSS, its idle CPU rate, and the
    CPU one neighbour and one /health probe cost (subtracted from an attack's CPU)."""
    rss = 0.0
    idle_cpu_per_s = 0.0
    neighbour_cpu_s = 0.0
    health_cpu_s = 0.0


class Watch:
    """Around one attack: the probe processes and an RSS sampler (every 50 ms) from start() until
    the attack is over; then three neighbour and three /health probes "after" and a final RSS."""

    def __init__(self, pid):
        self.pid = pid
        self.rss = []
        self.stop_rss = threading.Event()

    def _sample(self):
        while not self.stop_rss.is_set():
            r = rss_mb(self.pid)
            if r is not None:
                self.rss.append(r)
            self.stop_rss.wait(0.05)

    def start(self):
        self.sampler = threading.Thread(target=self._sample, daemon=True)
        self.sampler.start()
        self.probes = {what: subprocess.Popen([sys.executable, os.path.abspath(__file__), "--probe", str(PORT),
                                               API_KEY, what], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                              text=True) for what in ("neighbour", "health")}
        time.sleep(0.3)  # the probes' interpreters start outside the attack's CPU window
        # The reference for this attack: what earlier attacks left is not this one's doing (the
        # final check compares the end with the idle size before any attack).
        self.rss_before = rss_mb(self.pid) or 0.0
        self.cpu0, self.t0 = cpu_s(self.pid), time.monotonic()
        return self

    def over(self):
        """The attack is over: collect the probes, then measure "after"."""
        self.cpu1, self.t1 = cpu_s(self.pid), time.monotonic()
        self.during = {}
        for p in self.probes.values():
            p.stdin.close()  # each stops after the probe in flight (its pipe holds minutes of lines)
        for what, p in self.probes.items():
            try:
                p.wait(timeout=PROBE_TIMEOUT_S + 5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            out = p.stdout.read()
            p.stdout.close()
            self.during[what] = [json.loads(line) for line in out.splitlines() if line.strip()]
        self.peak_during = max(self.rss, default=0.0)
        time.sleep(0.5)
        self.after = {"neighbour": [], "health": []}
        for _ in range(3):
            for what, fn in (("neighbour", neighbour), ("health", health)):
                a = fn()
                self.after[what].append([a.status, a.ms])
        self.stop_rss.set()
        self.sampler.join(2)
        self.rss_after = rss_mb(self.pid) or 0.0
        self.peak = max(self.peak_during, max(self.rss, default=0.0))


def worst(samples):
    """(all 200, worst ms, "41 ms (12 samples)" or "3 of 12 not 200: [None, 503]; worst 3000 ms")."""
    if not samples:
        return False, float("inf"), "no samples"
    bad = [s for s, _ in samples if s != 200]
    top = max(ms for _, ms in samples)
    text = f"{top:.0f} ms ({len(samples)} samples)"
    if bad:
        text = f"{len(bad)} of {len(samples)} not 200: {sorted(set(map(str, bad)))}; worst {top:.0f} ms"
    return not bad, top, text


class Attacks:
    def __init__(self, h, pid, base):
        self.h, self.pid, self.base = h, pid, base

    def bounds(self, name, w, sent, cpu=True):
        """The four bounds of one attack, from its Watch and the bytes its attackers sent; returns
        the figures in a few words for the attack's summary line."""
        check = self.h.check
        summary = []
        for what, limit in (("neighbour", NEIGHBOUR_MS), ("health", HEALTH_MS)):
            ok_d, top_d, text_d = worst(w.during[what])
            ok_a, top_a, text_a = worst(w.after[what])
            label = "neighbour 2-token completion" if what == "neighbour" else "/health"
            check(ok_d and ok_a and top_d <= limit and top_a <= limit,
                  f"{name}: {label} 200 within {limit} ms: worst during {text_d}; after {text_a}")
            top = max(top_d, top_a)
            summary.append(f"{'neighbour' if what == 'neighbour' else '/health'} worst "
                           + (f"{top:.0f} ms" if ok_d and ok_a else f"{top:.0f} ms, not always 200"))
        memory_check(self.h, w.peak - w.rss_before <= RSS_MB and w.rss_after - w.rss_before <= RSS_MB,
                     f"{name}: coordinator RSS within {RSS_MB} MB of idle: idle {w.rss_before:.0f} MB (before any "
                     f"attack {self.base.rss:.0f} MB), peak {w.peak:.0f} MB, after {w.rss_after:.0f} MB")
        summary.append(f"RSS idle {w.rss_before:.0f} MB peak {w.peak:.0f} MB after {w.rss_after:.0f} MB")
        if w.cpu0 is None or w.cpu1 is None:
            check(False, f"{name}: the coordinator is gone (no /proc/PID/stat)")
            return summary
        raw_ms = (w.cpu1 - w.cpu0) * 1e3
        probes = {k: sum(1 for _ in v) for k, v in w.during.items()}
        attack_ms = max(0.0, raw_ms - 1e3 * (self.base.idle_cpu_per_s * (w.t1 - w.t0)
                                             + probes["neighbour"] * self.base.neighbour_cpu_s
                                             + probes["health"] * self.base.health_cpu_s))
        kb = sent / 1024
        text = (f"{name}: coordinator CPU {attack_ms:.0f} ms for the attack ({raw_ms:.0f} ms in all over "
                f"{w.t1 - w.t0:.1f} s, less idle and {probes['neighbour']}+{probes['health']} probes)")
        if cpu:
            check(attack_ms / max(kb, 1e-9) <= CPU_MS_PER_KB, f"{text} / {kb:.1f} KB sent = "
                  f"{attack_ms / max(kb, 1e-9):.2f} ms/KB (<= {CPU_MS_PER_KB})")
            summary.append(f"{attack_ms / max(kb, 1e-9):.2f} ms CPU/KB")
        else:
            print(f"info: {text}; no bytes sent, so no ms/KB", flush=True)
            summary.append(f"{attack_ms:.0f} ms CPU, no bytes sent")
        return summary

    def run(self, name, attack, cpu=True):
        """Runs attack() (it checks its own answers and returns the bytes it sent) under a Watch."""
        print(f"-- {name}", flush=True)
        fails_before = self.h.results["failed"]
        checks_before = self.h.results["passed"] + fails_before
        w = Watch(self.pid).start()
        t0 = time.monotonic()
        sent = 0
        try:
            sent = attack()
        except Exception as e:  # a bug here, or a server that breaks the helper: report, go on
            traceback.print_exc()
            self.h.check(False, f"{name}: the attack raised {type(e).__name__}: {e}")
        finally:
            w.over()
        took = time.monotonic() - t0
        failed_before = self.h.results["failed"]
        answers = self.h.results["passed"] + failed_before - checks_before
        answers_failed = failed_before - fails_before
        figures = self.bounds(name, w, sent, cpu)
        fails = self.h.results["failed"] - fails_before
        print(f"summary: {name}: {'FAIL' if fails else 'ok'} ({fails} failed checks); answers "
              f"{answers - answers_failed}/{answers} as expected; " + "; ".join(figures) + f"; {took:.1f} s",
              flush=True)

    # ---- 1. coded and oversized bodies --------------------------------------------------------

    def coded_bodies(self):
        check = self.h.check
        sent = 0
        for encoding, auth, want in (("gzip", True, (415,)), ("deflate", True, (415,)), ("gzip", False, (401, 415))):
            body = bomb(encoding)
            head = head_bytes("POST", "/v1/completions", "Content-Type: application/json",
                              f"Content-Encoding: {encoding}", f"Content-Length: {len(body)}", auth=auth)
            pieces = [body[i:i + (64 << 10)] for i in range(0, len(body), 64 << 10)]
            answers = []
            for _ in range(3):  # a few, so the probes see the server while it deals with them
                a, n = push("127.0.0.6", head, pieces, limit_s=10)
                answers.append(a)
                sent += n
                if a.ms > 1000:  # failed already (it inflates?): more of the same only costs time
                    break
            slowest = max(answers, key=lambda a: a.ms)
            good = all(a.status in want and openai_error(a) is not None and a.ms <= 1000 for a in answers)
            who = "with the API key" if auth else "without the API key"
            check(good, f"{encoding} bomb ({len(body) >> 10} KB inflating to 500 MB) {who}: "
                        f"{' or '.join(map(str, want))} with an OpenAI-shaped error within 1 s, each time: "
                        f"{[said(a) for a in answers]}; slowest's message {openai_error(slowest)!r}")
        return sent

    def oversized_bodies(self):
        check = self.h.check
        total = 100 << 20
        chunk = 64 << 10

        def chunks():
            for _ in range(total // chunk):
                yield b"%x\r\n" % chunk + b"x" * chunk + b"\r\n"
            yield b"0\r\n\r\n"
        head = head_bytes("POST", "/v1/completions", "Content-Type: application/json", "Transfer-Encoding: chunked")
        a, sent = push("127.0.0.7", head, chunks(), limit_s=20)
        check(a.status == 413 and sent < total,
              f"100 MB chunked body: 413 before it is all sent: {said(a)} after {sent / 2**20:.1f} MB sent")
        head = head_bytes("POST", "/v1/completions", "Content-Type: application/json", "Content-Length: 100000000")
        a, n = push("127.0.0.7", head, [], limit_s=3)
        check(a.status == 413 and a.ms <= 1000,
              f"Content-Length: 100000000 and no body: 413 within 1 s: {said(a)} {openai_error(a)!r}")
        return sent + n

    # ---- 2. framing -------------------------------------------------------------------------

    def framing(self):
        check = self.h.check
        sent = 0
        body = json.dumps(NEIGHBOUR_BODY).encode()

        def raw(data, timeout=3):
            nonlocal sent
            sent += len(data)
            return request(None, None, src="127.0.0.8", raw=data, timeout=timeout)
        a = raw(head_bytes("POST", "/v1/completions", "Content-Type: application/json",
                           f"Content-Length: {len(body)}", f"Content-Length: {len(body) + 2}") + body + b"{}")
        check(a.status == 400, f"two different Content-Lengths: 400: {said(a)}")
        chunked = b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"
        a = raw(head_bytes("POST", "/v1/completions", "Content-Type: application/json", "Transfer-Encoding: chunked",
                           f"Content-Length: {len(chunked)}") + chunked)
        check(a.status == 400, f"Transfer-Encoding: chunked with Content-Length: 400: {said(a)}")
        a = raw(head_bytes("POST", "/v1/completions", "Content-Type: application/json") + body)
        check(a.status == 411, f"a POST without Content-Length or Transfer-Encoding: 411: {said(a)}")

        # Three pipelined GETs in one send: three answers in order (different paths, so the order shows).
        paths = ["/v1/models", "/health", "/v1/models/model"]
        data = b"".join(head_bytes("GET", p, "Connection: keep-alive") for p in paths)
        sent += len(data)
        got = []
        t0 = time.monotonic()
        try:
            with connect("127.0.0.8", 5) as s:
                s.sendall(data)
                reader = Reader(s, t0 + 5)
                for _ in paths:
                    got.append(reader.response())
        except (OSError, EOFError, ValueError, IndexError) as e:
            got.append(str(e))

        def shape(r):
            try:
                j = json.loads(r[2])
                return r[0], j.get("object") or j.get("status")
            except (ValueError, TypeError, IndexError, AttributeError):
                return r
        shapes = [shape(r) for r in got]
        check(shapes == [(200, "list"), (200, "ok"), (200, "model")],
              f"3 pipelined GETs on one connection: 3 answers in order, all 200: {shapes}")

        # HTTP/1.0 and a stream: no chunked encoding (1.0 has none); the events run until the close.
        stream = json.dumps(dict(NEIGHBOUR_BODY, max_tokens=4, stream=True)).encode()
        a = raw(head_bytes("POST", "/v1/completions", "Content-Type: application/json",
                           f"Content-Length: {len(stream)}", version="HTTP/1.0") + stream, timeout=10)
        events = [line[len(b"data: "):].strip() for line in a.body.splitlines() if line.startswith(b"data: ")]
        check(a.status == 200 and "chunked" not in a.headers.get("transfer-encoding", "").lower()
              and events and events[-1] == b"[DONE]",
              f"HTTP/1.0 streamed completion: {said(a)}, Transfer-Encoding {a.headers.get('transfer-encoding')!r}, "
              f"{len(events)} events, last {events[-1] if events else None!r}")

        # 16 connections each of four malformed requests, all at once: answered or closed within 1 s.
        random_bytes = random.Random(7).randbytes
        hello = b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + random_bytes(32) + b"\x00\x00\x20" + \
            random_bytes(32) + b"\x01\x00\x00\x58" + random_bytes(88)
        post = head_bytes("POST", "/v1/completions", "Content-Type: application/json", "Transfer-Encoding: chunked")
        variants = [("a chunk size of 18 hex digits", post + b"ffffffffffffffffff\r\n", (400, None)),
                    ("a chunk size of -5", post + b"-5\r\n", (400,)),
                    ("a POST without a length", head_bytes("POST", "/v1/completions",
                                                           "Content-Type: application/json") + body, (411,)),
                    ("a TLS ClientHello on the plain port", hello, (400, None))]
        for what, payload, want in variants:
            results, n = hold_open(open_many("127.0.0.5", 16), payload, None, 1, give_up=2.0)
            sent += n
            held = [r[0] for r in results]
            ok = [r for r in results if r[0] is not None and r[0] <= 1.0 and r[1] in want]
            check(len(ok) == 16, f"16 x {what}: {' or '.join('closed' if w is None else str(w) for w in want)} "
                                 f"within 1 s: {len(ok)}/16; answers {dict(collections.Counter(r[1] for r in results))}"
                                 f"; slowest {max((x for x in held if x is not None), default=0):.2f} s, "
                                 f"{held.count(None)} still open after 2 s")
        return sent

    # ---- 3. slowloris -----------------------------------------------------------------------

    def slowloris(self):
        check = self.h.check
        out = {}

        def heads():
            conns = open_many("127.0.0.2", 128)
            out["heads"] = hold_open(conns, b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n",
                                     b"X-Slow: 1\r\n", every=2, give_up=15)

        def bodies():
            conns = open_many("127.0.0.4", 16)
            first = head_bytes("POST", "/v1/completions", "Content-Type: application/json",
                               "Content-Length: 1000") + b'{"prompt":'
            out["bodies"] = hold_open(conns, first, b" ", every=2, give_up=35)
        threads = [threading.Thread(target=fn, daemon=True) for fn in (heads, bodies)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(45)
        sent = 0
        for key, n, limit, what in (("heads", 128, 15, "a partial head, then a header line every 2 s"),
                                    ("bodies", 16, 35, "Content-Length 1000, 10 bytes, then a byte every 2 s")):
            results, n_sent = out.get(key, ([(None, None)] * n, 0))
            sent += n_sent
            held = [r[0] for r in results]
            closed = [x for x in held if x is not None]
            longest = f", the longest after {max(closed):.1f} s" if closed else ""
            check(len(closed) == n and max(closed) <= limit,
                  f"slowloris, {n} x {what}: each closed within {limit} s of its connect: {len(closed)}/{n} "
                  f"closed{longest}, {held.count(None)} still open at {limit} s; "
                  f"answers {dict(collections.Counter(r[1] for r in results))}")
        return sent

    # ---- 4. connection caps -----------------------------------------------------------------

    def caps(self):
        conns = open_many("127.0.0.3", 200)
        results, _ = hold_open(conns, b"", None, 1, give_up=2.0)
        # A connection refused at connect counts as closed at once (held 0).
        quick = [r for r in results if r[0] is not None and r[0] <= 1.0]
        self.h.check(len(quick) >= 200 - 128,
                     f"200 idle connections from one address (cap 128): those over the cap closed or refused "
                     f"within 1 s: {len(quick)} (want >= 72); answers {dict(collections.Counter(r[1] for r in quick))}"
                     f"; {sum(1 for r in results if r[0] is None)} still open at 2 s")
        return 0

    # ---- 5. backlog -------------------------------------------------------------------------

    def backlog(self):
        n = 300
        answers = [None] * n
        start = threading.Barrier(n + 1, timeout=30)
        body = json.dumps(NEIGHBOUR_BODY).encode()

        def one(i):
            try:
                start.wait()
            except threading.BrokenBarrierError:
                pass
            # 8 addresses (127.0.0.10-17), 38 each: under the per-address cap, none the neighbour's.
            answers[i] = request("POST", "/v1/completions", body, src=f"127.0.0.{10 + i % 8}", timeout=40)
        threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
        for t in threads:
            t.start()
        before = listen_overflows()
        try:
            start.wait()
        except threading.BrokenBarrierError:
            pass
        deadline = time.monotonic() + 45
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        after = listen_overflows()
        answered = [a for a in answers if a is not None and a.status is not None]
        statuses = collections.Counter(a.status if a is not None and a.status is not None else "none"
                                       for a in answers)
        slowest = max((a.ms for a in answers if a is not None), default=0)
        self.h.check(len(answered) == n and slowest <= 40e3,
                     f"backlog: {n} completions at once, each answered within 40 s: {len(answered)}/{n} answered "
                     f"({statuses.get(200, 0)} x 200; all: {dict(statuses)}), slowest {slowest:.0f} ms")
        self.h.check(after == before, f"backlog: the kernel's ListenOverflows did not grow: {before} -> {after}")
        return n * (len(body) + 150)  # each request's head is ~150 bytes

    # ---- 6. JSON amplification --------------------------------------------------------------

    def json_amplification(self):
        """Width (8 x 2 million elements at once), then depth (100000 levels)."""
        return self.json_width() + self.json_depth()

    def json_width(self):
        n, objects = 8, 2_000_000
        body = (b'{"model":"model","prompt":"hi","max_tokens":1,"ignored":[' + b"{}," * (objects - 1)
                + b"{}]}")
        answers = [None] * n
        start = threading.Barrier(n, timeout=30)

        def one(i):
            try:
                start.wait()
            except threading.BrokenBarrierError:
                pass
            answers[i] = request("POST", "/v1/completions", body, src="127.0.0.9", timeout=30)
        threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 35
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        got = [a if a is not None else Answer(None, {}, b"", 0, "thread still running") for a in answers]
        messages = {openai_error(a) for a in got}

        def names_limit(a):
            m = openai_error(a) or ""
            return "4096 JSON objects and arrays" in m
        self.h.check(all(a.status == 400 and names_limit(a) for a in got),
                     f"{n} x {len(body) / 1e6:.1f} MB of {objects} empty objects at once: 400 naming the limit: "
                     f"{[said(a) for a in got]}; messages {sorted(map(str, messages))}")
        return n * len(body)

    def json_depth(self):
        depth = 100_000
        body = (b'{"model":"model","prompt":"hi","max_tokens":1,"ignored":' + b"[" * depth + b"]" * depth + b"}")
        answers = [request("POST", "/v1/completions", body, src="127.0.0.9", timeout=10) for _ in range(2)]
        self.h.check(all(a.status == 400 for a in answers),
                     f"JSON nested {depth} deep: 400: {[said(a) for a in answers]}; "
                     f"message {openai_error(answers[0])!r}")
        return 2 * len(body)


_BOMBS = {}


def bomb(encoding, mib=500):
    """A body of ~500 KB that inflates to `mib` MiB: a JSON prefix and zeros, Content-Encoding gzip
    or deflate (zlib's format). One MiB of zeros is compressed once, ending in a full flush, so its
    blocks need nothing before them and are simply repeated (milliseconds, not seconds)."""
    if (encoding, mib) in _BOMBS:
        return _BOMBS[encoding, mib]
    prefix = b'{"model":"model","prompt":"'
    zeros = bytes(1 << 20)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    start = c.compress(prefix) + c.flush(zlib.Z_FULL_FLUSH)
    segment = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
    deflated = start + segment * mib + zlib.compressobj(9, zlib.DEFLATED, -15).flush()  # + a final empty block
    crc, adler = zlib.crc32(prefix), zlib.adler32(prefix)
    for _ in range(mib):
        crc, adler = zlib.crc32(zeros, crc), zlib.adler32(zeros, adler)
    size = len(prefix) + (mib << 20)
    if encoding == "gzip":
        body = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + deflated + struct.pack("<II", crc, size & 0xFFFFFFFF)
    else:
        body = b"\x78\xda" + deflated + struct.pack(">I", adler)
    _BOMBS[encoding, mib] = body
    return body


def measure_baseline(h, pid):
    """RSS and CPU at rest, after a warm-up, and what the probes themselves cost."""
    base = Baseline()
    for _ in range(3):
        neighbour(timeout=30)  # the first generations allocate what later ones reuse
    time.sleep(0.5)
    samples = []
    c0, t0 = cpu_s(pid), time.monotonic()
    while time.monotonic() - t0 < 2.5:  # /proc counts CPU in 10 ms ticks: long enough to resolve ~4 ms/s
        samples.append(rss_mb(pid))
        time.sleep(0.05)
    base.idle_cpu_per_s = (cpu_s(pid) - c0) / (time.monotonic() - t0)
    base.rss = sorted(samples)[len(samples) // 2]
    for what, fn in (("neighbour", neighbour), ("health", health)):
        c0, t0 = cpu_s(pid), time.monotonic()
        got = [fn() for _ in range(20)]
        per = max(0.0, (cpu_s(pid) - c0) - base.idle_cpu_per_s * (time.monotonic() - t0)) / 20
        setattr(base, f"{what}_cpu_s", per)
        ok, top, text = worst([[a.status, a.ms] for a in got])
        h.check(ok, f"at rest: {what} worst {text}, {per * 1e3:.1f} ms coordinator CPU each")
    print(f"info: at rest: coordinator RSS {base.rss:.0f} MB, idle CPU {base.idle_cpu_per_s * 1e3:.1f} ms/s",
          flush=True)
    return base


ASAN = False  # the coordinator is built with AddressSanitizer (main() looks)


def memory_check(h, ok, what):
    """A memory bound: checked, except under AddressSanitizer, whose quarantine keeps freed memory by
    design (shown then, with the reason, as soak_test does)."""
    if ASAN:
        print(f"SKIP: {what} (not checked under AddressSanitizer: its quarantine keeps freed memory)", flush=True)
        return True
    return h.check(ok, what)


def hung_worker(h, c, hang_s=3.5):
    """A worker stopped (SIGSTOP) mid-step under streaming clients: the engine loop is blocked inside
    the step, yet /health turns 503 and new requests are refused within the heartbeat bound (3 x
    the 500 ms report interval), naming the rank; SIGCONT before --worker-timeout-s (10 s here) and
    every stream finishes, health returns."""
    workers = c.pid_of("moe-worker")
    if not h.check(len(workers) == 2, f"hung worker: the workers' pids {workers}"):
        return
    results = []

    def stream():
        body = {"model": "model", "prompt": "Hello", "max_tokens": 1000, "temperature": 0, "stream": True}
        results.append(request("POST", "/v1/completions", body, timeout=40))
    clients = [threading.Thread(target=stream) for _ in range(8)]
    for t in clients:
        t.start()
    time.sleep(0.5)  # the streams are in the batch, steps running
    os.kill(workers[0], signal.SIGSTOP)
    t0 = time.monotonic()
    try:
        seen = None
        while time.monotonic() - t0 < hang_s:
            a = health(timeout=1)
            if a.status == 503:
                seen = (time.monotonic() - t0, a)
                break
            time.sleep(0.05)
        h.check(seen is not None and seen[0] <= 2.0,
                f"hung worker: /health 503 within 2 s of SIGSTOP mid-step: "
                f"{f'after {seen[0]:.2f} s: {openai_error(seen[1]) or seen[1].body[:120]!r}' if seen else 'never'}")
        a = neighbour(timeout=2)
        h.check(a.status == 503 and "worker rank" in (openai_error(a) or "") and a.ms < 500,
                f"hung worker: a new request is refused at once: {said(a)} {openai_error(a)!r}")
        time.sleep(max(0.0, hang_s - (time.monotonic() - t0)))
    finally:
        os.kill(workers[0], signal.SIGCONT)
    back = None
    t1 = time.monotonic()
    while time.monotonic() - t1 < 5:
        if health(timeout=1).status == 200:
            back = time.monotonic() - t1
            break
        time.sleep(0.05)
    h.check(back is not None, f"hung worker: /health 200 again {back if back is None else f'{back:.2f} s'} after SIGCONT")
    for t in clients:
        t.join(45)
    done = [a for a in results if a.status == 200 and a.body.rstrip().endswith(b"data: [DONE]")]
    h.check(len(done) == len(clients), f"hung worker: {len(done)}/{len(clients)} streams held over the "
                                       f"{hang_s} s hang finished with [DONE]: {[said(a) for a in results]}")


def main():
    global PORT, API_KEY, ASAN
    # The harness needs grpc (Debian's python3-grpcio): a python3 without it hands over to the system's.
    system = "/usr/bin/python3"
    if importlib.util.find_spec("grpc") is None and os.path.exists(system) \
            and os.path.realpath(sys.executable) != os.path.realpath(system):
        os.execv(system, [system, os.path.abspath(__file__)] + sys.argv[1:])
    bin_dir, src, work, stubs = sys.argv[1:5]
    sys.path.insert(0, stubs)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from harness import Harness

    ASAN = "libasan" in subprocess.run(["ldd", os.path.join(bin_dir, "moe-coordinator")], capture_output=True,
                                       text=True).stdout
    t_start = time.monotonic()
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    h = Harness(bin_dir, src, work)
    model = os.path.join(work, "model")
    h.make_model(model, seed=5, experts=4)
    API_KEY = "hostile-http-test-key-0123456789"
    key_file = os.path.join(work, "api-key")
    with open(key_file, "w") as f:
        f.write(API_KEY + "\n")
    http_port_file, metrics_port_file = os.path.join(work, "http-port"), os.path.join(work, "metrics-port")
    c = h.cluster(2, "--http-listen", "127.0.0.1:0", "--http-port-file", http_port_file,
                  "--http-api-key-file", key_file, "--metrics-listen", "127.0.0.1:0",
                  "--metrics-port-file", metrics_port_file, "--worker-timeout-s", "10", model=model)
    try:
        PORT = int(h.wait_for(lambda: os.path.exists(http_port_file) and open(http_port_file).read().strip(),
                              "the HTTP port file"))
        metrics_port = int(h.wait_for(lambda: os.path.exists(metrics_port_file)
                                      and open(metrics_port_file).read().strip(), "the metrics port file"))
        pids = c.pid_of("moe-coordinator")
        h.check(len(pids) == 1, f"the coordinator's pid: {pids}")
        pid = pids[0]
        print(f"info: cluster up after {time.monotonic() - t_start:.1f} s; HTTP port {PORT}, metrics {metrics_port}",
              flush=True)
        a = request("GET", "/v1/models", auth=False)
        h.check(a.status == 401, f"the API key is asked: GET /v1/models without it: {said(a)}")

        bomb("gzip"), bomb("deflate")  # built now, not while an attack's CPU is measured
        base = measure_baseline(h, pid)
        attacks = Attacks(h, pid, base)
        attacks.run("coded bodies (gzip/deflate bombs)", attacks.coded_bodies)
        attacks.run("oversized bodies", attacks.oversized_bodies)
        attacks.run("strict framing", attacks.framing)
        attacks.run("slowloris", attacks.slowloris)
        attacks.run("connection caps", attacks.caps, cpu=False)  # idle connections send no bytes
        attacks.run("backlog", attacks.backlog)
        attacks.run("JSON amplification", attacks.json_amplification)

        h.check(c.pid_of("moe-coordinator") == [pid], "the coordinator survived every attack (same pid)")
        end = rss_mb(pid) or 0.0
        memory_check(h, end - base.rss <= RSS_MB, f"after every attack the coordinator's RSS is within {RSS_MB} MB "
                                                  f"of its idle size before them: {base.rss:.0f} MB -> {end:.0f} MB")
        t0 = time.monotonic()
        try:
            with socket.create_connection(("127.0.0.1", metrics_port), timeout=5) as s:
                s.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                status, _, body = Reader(s, t0 + 5).response()
            h.check(status == 200 and b"moe_requests_running" in body, f"/metrics still answers: {status}")
        except (OSError, EOFError, ValueError, IndexError) as e:
            h.check(False, f"/metrics still answers: {e}")
        hung_worker(h, c)
        t0 = time.monotonic()
        code = c.stop(timeout=30)
        h.check(code == 0, f"SIGTERM: the job exits 0: {code} ({time.monotonic() - t0:.1f} s)")
    finally:
        c.kill()
    print(f"info: {time.monotonic() - t_start:.0f} s in all", flush=True)
    sys.exit(h.finish())


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--probe":
        probe_main(int(sys.argv[2]), sys.argv[3], sys.argv[4])
    else:
        main()
