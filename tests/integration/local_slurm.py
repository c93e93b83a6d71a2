"""A Slurm cluster of one node on this machine, for the tests: Debian's munged, slurmctld and slurmd
started as the test's own processes (ports, sockets, state and logs under the work directory; the
machine's /etc/slurm and /etc/munge untouched), stopped however the test ends. sbatch, squeue and
sinfo reach it through the environment of env().

Needs root (slurmd runs jobs as their submitter) and Debian's slurmctld, slurmd, slurm-client and
munge packages (scripts/install-deps.sh)."""
import os
import shutil
import signal
import socket
import subprocess
import time


def unavailable_reason():
    if os.geteuid() != 0:
        return "a local Slurm needs root (slurmd); run the tests as root"
    missing = [b for b in ("munged", "slurmctld", "slurmd", "sbatch", "sinfo") if shutil.which(b) is None]
    if missing:
        return f"{', '.join(missing)} missing (scripts/install-deps.sh installs Slurm and munge)"
    return None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalSlurm:
    def __init__(self, work_dir, cpus):
        self.dir = os.path.join(work_dir, "slurm")
        self.cpus = cpus
        self.node = socket.gethostname().split(".")[0]
        self.procs = []
        self.conf = os.path.join(self.dir, "slurm.conf")
        self.munge_socket = os.path.join(self.dir, "munge", "munge.socket")

    def env(self):
        return dict(os.environ, SLURM_CONF=self.conf)

    def log(self, name):
        path = os.path.join(self.dir, f"{name}.log")
        return open(path).read() if os.path.exists(path) else ""

    def __enter__(self):
        shutil.rmtree(self.dir, ignore_errors=True)
        for d in ("state", "spool", "munge"):
            os.makedirs(os.path.join(self.dir, d))
        os.chmod(os.path.join(self.dir, "munge"), 0o700)
        key = os.path.join(self.dir, "munge", "munge.key")
        with open(key, "wb") as f:
            f.write(os.urandom(1024))
        os.chmod(key, 0o400)
        d = self.dir
        with open(self.conf, "w") as f:
            f.write(f"""# A one-node Slurm for the tests (tests/integration/local_slurm.py)
ClusterName=moetest
SlurmctldHost={self.node}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket}
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
MpiDefault=none
ReturnToService=2
# The node declares {self.cpus} CPUs whatever the machine has (config_overrides): a test cluster
# of 1 coordinator + workers on a 2-core machine.
SlurmdParameters=config_overrides
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} State=UNKNOWN
PartitionName=moe Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
""")
        try:
            self._start(["munged", "--foreground", "--force", "--key-file", key, "--socket", self.munge_socket,
                         "--pid-file", os.path.join(d, "munge", "munged.pid"), "--log-file",
                         os.path.join(d, "munged.log"), "--seed-file", os.path.join(d, "munge", "seed")])
            self._wait(lambda: os.path.exists(self.munge_socket), "munged's socket", 10)
            self._start(["slurmctld", "-D", "-i", "-f", self.conf])
            self._start(["slurmd", "-D", "-f", self.conf, "-N", self.node])
            self._wait(self._idle, "the node to be idle", 30)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _start(self, cmd):
        self.procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(
            os.path.join(self.dir, f"{os.path.basename(cmd[0])}.stderr"), "w"), env=self.env(), start_new_session=True))

    def _wait(self, predicate, what, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if predicate():
                return
            dead = [p.args[0] for p in self.procs if p.poll() is not None]
            if dead:
                raise RuntimeError(f"{', '.join(dead)} exited while waiting for {what}: "
                                   f"{self.log('slurmctld')[-400:]}{self.log('slurmd')[-400:]}")
            time.sleep(0.2)
        raise RuntimeError(f"timed out waiting for {what}")

    def _idle(self):
        p = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, env=self.env(), timeout=10)
        return p.returncode == 0 and p.stdout.strip() == "idle"

    def __exit__(self, *exc):
        for p in reversed(self.procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        return False
