"""Test hosts in Linux network namespaces: a coordinator host and worker hosts, each with one
interface on a bridge (in a namespace of its own) and an address of the test's own, so Open MPI's
TCP transport, the gRPC port and the workers' telemetry all cross a real network stack with links
that can be cut or shaped, and nothing of the machine's own network is touched. mpirun reaches the
hosts through an rsh agent that enters the host's namespace (as ssh would log in to a node).
Namespaces are entered with nsenter (util-linux), which works in a chroot too.

Needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and iproute2. Every `ip` call is bounded in time;
teardown kills whatever still runs in the namespaces and deletes them, however the test ends, and
namespaces left by a test that was killed are removed at the next start."""
import os
import re
import signal
import subprocess
import time

PREFIX = "moet"  # every namespace of these tests: moet<pid>sw, moet<pid>h0, ...


def ip(*args, check=True):
    p = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if check and p.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {p.stderr.strip()}")
    return p


def enter(ns):
    """The command prefix that runs a program in namespace `ns`'s network. nsenter, not `ip netns
    exec` (nor `ip -n`), which also makes a mount namespace and fails where / is not a mount point
    (a chroot, as in scripts' fresh-machine checks)."""
    return ["nsenter", f"--net=/run/netns/{ns}"]


def ip_in(ns, *args, check=True):
    p = subprocess.run([*enter(ns), "ip", *args], capture_output=True, text=True, timeout=10)
    if check and p.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} in {ns}: {p.stderr.strip()}")
    return p


def unavailable_reason():
    """None where namespaces can be made here, else why not (for a visible skip)."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add); run the tests as root"
    probe = f"{PREFIX}probe{os.getpid()}"
    try:
        r = ip("netns", "add", probe, check=False)
    except FileNotFoundError:
        return "iproute2's ip is missing (scripts/install-deps.sh installs it)"
    if r.returncode != 0:
        return f"this machine forbids network namespaces: ip netns add: {r.stderr.strip()}"
    try:
        b = ip_in(probe, "link", "add", "br0", "type", "bridge", check=False)
        if b.returncode != 0:
            return f"cannot make a bridge in a network namespace here: {b.stderr.strip()}"
    except FileNotFoundError:
        return "nsenter is missing (util-linux)"
    finally:
        ip("netns", "del", probe, check=False)
        if os.path.isdir("/run/netns") and not os.listdir("/run/netns"):
            subprocess.run(["umount", "/run/netns"], capture_output=True, timeout=10)
    return None


def namespace_pids(ns):
    r = ip("netns", "pids", ns, check=False)
    return [int(p) for p in r.stdout.split()]


def remove_stale():
    """Namespaces of earlier runs whose test process is gone."""
    for line in ip("netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        m = re.match(rf"{PREFIX}(\d+)", name)
        if m and not os.path.exists(f"/proc/{m.group(1)}"):
            for pid in namespace_pids(name):
                os.kill(pid, signal.SIGKILL)
            ip("netns", "del", name, check=False)


class Network:
    """hosts[i] is a namespace with address ips[i] on SUBNET.0/24; a context manager."""

    def __init__(self, n_hosts, work_dir, subnet="10.213.0"):
        self.tag = f"{PREFIX}{os.getpid()}"
        self.switch = f"{self.tag}sw"
        self.hosts = [f"{self.tag}h{i}" for i in range(n_hosts)]
        self.ips = [f"{subnet}.{i + 1}" for i in range(n_hosts)]
        self.cidr = f"{subnet}.0/24"
        self.work = work_dir
        self.agent = os.path.join(work_dir, "netns-rsh")

    @classmethod
    def from_spec(cls, spec):
        """The network another process made, from its __dict__ (the controls, without set-up or
        teardown: that process owns them)."""
        net = cls.__new__(cls)
        net.__dict__.update(spec)
        return net

    def iface(self, i):  # the host's side of its link (interface names are at most 15 bytes)
        return f"{self.tag}e{i}"[-15:]

    def port(self, i):  # the bridge's side
        return f"{self.tag}p{i}"[-15:]

    def __enter__(self):
        remove_stale()
        try:
            ip("netns", "add", self.switch)
            ip_in(self.switch, "link", "add", "br0", "type", "bridge")
            ip_in(self.switch, "link", "set", "br0", "up")
            for i, (host, addr) in enumerate(zip(self.hosts, self.ips)):
                ip("netns", "add", host)
                ip("link", "add", self.iface(i), "type", "veth", "peer", "name", self.port(i))
                ip("link", "set", self.iface(i), "netns", host)
                ip("link", "set", self.port(i), "netns", self.switch)
                ip_in(self.switch, "link", "set", self.port(i), "master", "br0")
                ip_in(self.switch, "link", "set", self.port(i), "up")
                ip_in(host, "addr", "add", f"{addr}/24", "dev", self.iface(i))
                ip_in(host, "link", "set", self.iface(i), "up")
                ip_in(host, "link", "set", "lo", "up")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        # The rsh agent mpirun runs as `AGENT HOST COMMAND...`: the command, in the host's namespace.
        cases = "\n".join(f"  {addr}) ns={host} ;;" for host, addr in zip(self.hosts, self.ips))
        with open(self.agent, "w") as f:
            f.write(f"#!/bin/sh\n# mpirun's rsh agent for the test hosts: HOST COMMAND... runs COMMAND in HOST's\n"
                    f"# network namespace, as ssh would on a node.\nhost=$1; shift\ncase $host in\n{cases}\n"
                    f"  *) echo \"netns-rsh: unknown host $host\" >&2; exit 255 ;;\nesac\n"
                    f"# Each host has a /tmp of its own, as nodes do (Open MPI's session directories\n"
                    f"# are named by host name, which the namespaces share).\n"
                    f"mkdir -p {self.work}/tmp-$ns\n"
                    f"exec nsenter --net=/run/netns/\"$ns\" env TMPDIR={self.work}/tmp-$ns /bin/sh -c \"$*\"\n")
        os.chmod(self.agent, 0o755)
        return self

    def __exit__(self, *exc):
        for ns in self.hosts + [self.switch]:
            for pid in namespace_pids(ns):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        deadline = time.time() + 10
        while time.time() < deadline and any(namespace_pids(ns) for ns in self.hosts):
            time.sleep(0.05)
        for ns in self.hosts + [self.switch]:
            ip("netns", "del", ns, check=False)
        # `ip netns add` bind-mounts /run/netns onto itself; with no namespace left in it, undo that
        # too, so that nothing of the test stays mounted (a chroot's directory can then be removed).
        try:
            if not os.listdir("/run/netns"):
                subprocess.run(["umount", "/run/netns"], capture_output=True, timeout=10)
        except OSError:
            pass
        return False

    def hostfile(self, path, hosts):
        """A hostfile like a user's: one line per host index, one slot each."""
        with open(path, "w") as f:
            for i in hosts:
                f.write(f"{self.ips[i]} slots=1\n")
        return path

    def mpi_env(self):
        """What mpirun needs to use these hosts: the agent, and the test network for Open MPI's
        control messages and its TCP transport."""
        return {"OMPI_MCA_plm_rsh_agent": self.agent, "OMPI_MCA_oob_tcp_if_include": self.cidr,
                "OMPI_MCA_btl_tcp_if_include": self.cidr}

    def running(self, programs=("moe-coordinator", "moe-worker", "mpirun", "orterun", "orted")):
        """{namespace: [(pid, program)]} of the cluster's processes still running on the hosts (not
        the test's own, which runs on the first host)."""
        found = {}
        for ns in self.hosts:
            for pid in namespace_pids(ns):
                try:  # by argv[0]: the ranks' comm is not their program's name
                    program = os.path.basename(open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")[0].decode())
                except (OSError, UnicodeDecodeError):
                    continue
                if program in programs:
                    found.setdefault(ns, []).append((pid, program))
        return found

    def cut(self, i):
        """The host's link goes down (its cable pulled): no FIN, no RST, packets just stop."""
        ip_in(self.hosts[i], "link", "set", self.iface(i), "down")

    def shape(self, i, rate):
        """A token bucket of `rate` (e.g. "1gbit") on the host's link, both directions."""
        for ns, dev in ((self.hosts[i], self.iface(i)), (self.switch, self.port(i))):
            r = subprocess.run([*enter(ns), "tc", "qdisc", "replace", "dev", dev, "root", "tbf",
                                "rate", rate, "burst", "256kb", "latency", "50ms"], capture_output=True, text=True,
                               timeout=10)
            if r.returncode != 0:
                raise RuntimeError(f"tc tbf on {dev}: {r.stderr.strip()}")

    def delay(self, i, delay):
        """netem delay on the host's link, both directions; the error text where the kernel lacks netem."""
        for ns, dev in ((self.hosts[i], self.iface(i)), (self.switch, self.port(i))):
            r = subprocess.run([*enter(ns), "tc", "qdisc", "replace", "dev", dev, "root", "netem",
                                "delay", delay], capture_output=True, text=True, timeout=10)
            if r.returncode != 0:
                return r.stderr.strip()
        return None

    def unshape(self, i):
        for ns, dev in ((self.hosts[i], self.iface(i)), (self.switch, self.port(i))):
            subprocess.run([*enter(ns), "tc", "qdisc", "del", "dev", dev, "root"], capture_output=True,
                           timeout=10)
