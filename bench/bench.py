#!/usr/bin/env python3
"""Side-by-side benchmark of omirrd against syncthing, lsyncd, unison and rsync.

Run it as `bench/run [OPTIONS]` (root; see --help). It installs the other
tools from Debian if missing, builds omirrd (or takes $OMIRRD), then runs
itself again inside a private network namespace (`unshare -n`, `lo` up) so
that the loopback counters count the benchmark's traffic only. Every tool
runs as two "hosts" on 127.0.0.1: host A holds the source tree, host B the
destination, both under /var/tmp/omirr-bench (the normal disk, not tmpfs).
The workloads come from bench/workloads.py (small, large, real). Every
tree is kept until the end of the run (about 8 GiB for a full run): ext4
allocates inodes slowly for a while after many files were deleted, which
would slow down whichever tool runs next.

What is measured
  initial sync   A holds the workload, B is empty; from starting the tool
                 until B equals A. "Equal" is checked by polling B every
                 0.1 s: an entry count first, then a stat manifest (path,
                 mode, size, mtime of files, link targets) against A's, and
                 only when those match, `workloads.py digest` of both trees.
                 The time is taken when the manifest matched.
  bytes          delta of the `lo` tx_bytes counter (/proc/net/dev) from the
                 start of a phase until 2 s after it converged, so trailing
                 acknowledgements and index updates count too. Loopback
                 counts each packet once on tx: payload plus TCP/IP headers
                 (and TLS for omirrd and syncthing).
  re-sync        with the tool running and converged, `workloads.py edit`
                 on A, then as above (time from the end of the edit).
                 `real` has no edit: n/a.
  peak RSS       every 0.1 s, the sum of VmHWM over all live processes of
                 the tool (every process in the sessions it started: both
                 hosts, syncthing's monitor and child, rsync children of
                 lsyncd and of the rsync daemon); the maximum from start to
                 stop (initial sync and re-sync).
  latency        on an empty tree, after one warm-up file has arrived: 20
                 files of 4 KiB written one at a time on A (open, write,
                 close); each one's time from close until it is on B with
                 its full size (B polled every 1 ms); p50, p95, max.
  rename         after the re-sync of `small`: the directory that holds
                 the whole tree renamed on A (`mv small small.renamed`),
                 then as above.
  restart        after `small` has converged: stop every process, start
                 again, time until the tool is up and reports that it has
                 exchanged everything (per tool below) and bytes.
  fan-out        initial sync of `small` from A to B and C at once (tools
                 that mirror to several hosts: omirrd, syncthing).
  cp             local baseline for `large`: cp of big.bin on the same
                 disk, without and with a following sync.
  live ingest    the tool running on two empty trees (up once a warm-up
                 file has arrived on B), then `cp -a` of `small` into A;
                 the copy's own time, and the time from the copy's end
                 until B equals A (rsync: its back-to-back loop).
  million        opt-in (--million), omirrd only: 1,000,000 files of 64
                 bytes, 1,000 per directory, generated here; initial sync
                 to an empty host, each daemon's own peak RSS (VmHWM of
                 that process), the index's size per entry
                 (index.redb / entries) on each host, and a restart with
                 nothing changed (as `restart` above). B is polled every
                 2 s, not 0.1 s: counting a million entries costs the
                 poller CPU the daemons would miss.

Tool settings (each at its fastest sensible setting; also in the report)
  omirrd     one daemon per host, `omirrd -f`, a Distfile `/data -> (a b)`,
             peers on 127.0.0.1; it fsyncs what it applies.
  syncthing  two instances, listen tcp://127.0.0.1:PORT, devices with
             fixed addresses; discovery, relays, NAT, STUN, usage and crash
             reports, upgrades off; setLowPriority=false; folder
             sendreceive, fsWatcherDelayS=1, rescanIntervalS=86400,
             weakHashThresholdPct=101 (weak hash off), caseSensitiveFS=true,
             scanProgressIntervalS=-1; GUI/REST on a Unix socket (no lo
             traffic); fsync left on (the default).
  lsyncd     one-way A -> B: default.rsync with delay=0, archive=true,
             compress=false, into an rsync daemon for B.
  unison     `unison -socket` for B; the client with -repeat 1 (Debian's
             unison 2.52 has no unison-fsmonitor, so no `-repeat watch`).
  rsync      an rsync daemon for B; `rsync -a --delete A/ rsync://.../b/`
             per phase (delta transfer; no --whole-file); for latency a
             back-to-back loop of that command.
"""
import argparse
import datetime
import http.client
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import stat
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
WORKLOADS_PY = os.path.join(HERE, "workloads.py")
BENCH_ROOT = "/var/tmp/omirr-bench"   # --dir
MILLION_PER_DIR, MILLION_SIZE = 1000, 64
MILLION_POLL = 2.0    # convergence poll interval of the million-file phase, seconds
TOOLS = ["omirrd", "syncthing", "lsyncd", "unison", "rsync"]
EXTRA_TOOLS = ["rsync-fsync"]  # only when named in --tools
WORKLOADS = ["small", "large", "real"]
EDITS = {"small", "large"}
PACKAGES = ["syncthing", "lsyncd", "unison", "rsync", "iproute2"]
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"

POLL = 0.1            # convergence poll interval, seconds
SETTLE = 2.0          # bytes are counted until this long after convergence
STOP_GRACE = 5.0      # SIGTERM, then SIGKILL after this long
LATENCY_FILES = 20
LATENCY_SIZE = 4096


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Timeout(Exception):
    pass


def lo_tx_bytes():
    with open("/proc/net/dev") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name.strip() == "lo":
                return int(rest.split()[8])
    raise RuntimeError("no lo in /proc/net/dev")


def listening(port):
    """Whether something listens on TCP `port` (read from /proc: no traffic)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                    return True
    return False


def wait_for(cond, deadline, what, every=0.05):
    while not cond():
        if time.monotonic() > deadline:
            raise Timeout(what)
        time.sleep(every)


def write(path, text, mode=0o644):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def run(argv, **kw):
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kw).stdout


# ---------------------------------------------------------------- processes

class Procs:
    """The processes of one tool: each started in a session of its own, so
    that the tool's children (forked or exec'd) can be found by session id,
    measured and stopped."""

    live = []  # every Procs not yet stopped, for the cleanup on exit

    def __init__(self):
        self.popens = []
        Procs.live.append(self)

    def start(self, argv, logfile, env=None, cwd=None):
        with open(logfile, "ab") as out:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                 env=None if env is None else {**os.environ, **env},
                                 cwd=cwd, start_new_session=True)
        self.popens.append(p)
        return p

    def pids(self):
        sids = {p.pid for p in self.popens}
        found = []
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    with open(f"/proc/{d}/stat") as f:
                        fields = f.read().rpartition(")")[2].split()
                except OSError:
                    continue
                if int(fields[3]) in sids:
                    found.append(int(d))
        return found

    def hwm_kib(self):
        """Sum of VmHWM over the live processes."""
        return sum(self.hwm_by_pid().values())

    def hwm_by_pid(self):
        """{pid: VmHWM in KiB} of the live processes."""
        out = {}
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/status") as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            out[pid] = int(line.split()[1])
            except OSError:
                pass
        return out

    def signal(self, sig):
        for pid in self.pids():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def gone(self, within):
        """Waits up to `within` seconds for every process to exit."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            for p in self.popens:
                p.poll()
            if not self.pids():
                return True
            time.sleep(0.05)
        return False

    def stop(self):
        """SIGTERM every process, SIGKILL what is left after STOP_GRACE."""
        self.signal(signal.SIGTERM)
        if not self.gone(STOP_GRACE):
            self.signal(signal.SIGKILL)
            self.gone(STOP_GRACE)
        for p in self.popens:
            p.wait()
        self.popens = []
        if self in Procs.live:
            Procs.live.remove(self)


class RssSampler:
    """Samples Procs.hwm_by_pid() every 0.1 s in a thread; .peak_kib is the
    max of the sum, .by_pid each process's own max."""

    def __init__(self, procs):
        self.procs, self.peak_kib, self.by_pid = procs, 0, {}
        self.halt = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _sample(self):
        now = self.procs.hwm_by_pid()
        self.peak_kib = max(self.peak_kib, sum(now.values()))
        for pid, kib in now.items():
            self.by_pid[pid] = max(self.by_pid.get(pid, 0), kib)

    def _loop(self):
        while not self.halt.is_set():
            self._sample()
            self.halt.wait(0.1)

    def stop(self):
        self._sample()
        self.halt.set()
        self.thread.join()
        return self.peak_kib


# ------------------------------------------------------------ tree compare

def count_entries(d):
    n, stack = 0, [d]
    while stack:
        with os.scandir(stack.pop()) as it:
            for e in it:
                n += 1
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
    return n


def manifest(d):
    """{relative path: (mode, size, mtime_ns) | (mode, link target) | (mode,)}"""
    m, stack, cut = {}, [d], len(d) + 1
    while stack:
        with os.scandir(stack.pop()) as it:
            for e in it:
                st = e.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    m[e.path[cut:]] = (st.st_mode,)
                    stack.append(e.path)
                elif stat.S_ISLNK(st.st_mode):
                    m[e.path[cut:]] = (st.st_mode, os.readlink(e.path))
                else:
                    m[e.path[cut:]] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return m


def digest(d):
    return run([sys.executable, WORKLOADS_PY, "digest", d]).strip()


def without_mtimes(m):
    return {k: v[:2] for k, v in m.items()}


class Reference:
    """Source tree A, as the destinations must become."""

    def __init__(self, path):
        self.path = path
        self.manifest = manifest(path)
        self.count = len(self.manifest)
        self.loose = without_mtimes(self.manifest)
        self._digest = None

    def digest(self):
        if self._digest is None:
            self._digest = digest(self.path)
        return self._digest


def wait_converged(ref, dests, deadline, every=POLL):
    """Polls until every tree in `dests` equals `ref`; returns the time (as
    time.monotonic()) when the last one's manifest matched. A tree whose
    manifest matches except for file mtimes is digested at most every 5 s
    (for a tool that would not keep mtimes)."""
    pending, done_at, loose_try = list(dests), 0.0, {}
    while pending:
        for d in list(pending):
            try:
                if count_entries(d) != ref.count:
                    continue
                m = manifest(d)
            except FileNotFoundError:  # not created yet, or a temporary file renamed
                continue
            now = time.monotonic()
            if m != ref.manifest:
                if now - loose_try.get(d, 0) < 5 or without_mtimes(m) != ref.loose:
                    continue
                loose_try[d] = now
            if digest(d) == ref.digest():
                pending.remove(d)
                done_at = now
        if pending:
            if time.monotonic() > deadline:
                raise Timeout("not converged")
            time.sleep(every)
    return done_at


class Phase:
    """Time and lo bytes of one measured phase."""

    def __init__(self):
        self.t0, self.b0 = time.monotonic(), lo_tx_bytes()

    def finish(self, t_end, settle=SETTLE):
        self.seconds = t_end - self.t0
        time.sleep(settle)
        self.bytes = lo_tx_bytes() - self.b0
        return self


# ------------------------------------------------------------------- tools

class Host:
    """T/NAME/ is a host: its data tree is T/NAME/root/data."""

    def __init__(self, top, name):
        self.name, self.dir = name, os.path.join(top, name)
        self.root = os.path.join(self.dir, "root")
        self.data = os.path.join(self.root, "data")
        os.makedirs(self.data)


class Tool:
    name = ""
    settings = ""
    fanout = False        # can mirror A to several hosts at once
    restart_how = ""      # how the restart phase sees that it is done
    next_port = 23000

    def __init__(self, hosts):
        self.hosts = hosts
        self.procs = Procs()

    @classmethod
    def port(cls):
        Tool.next_port += 1
        return Tool.next_port

    @staticmethod
    def version():
        raise NotImplementedError

    def prepare(self):
        """Writes configurations; may add tool files to the trees (before A
        is taken as the reference)."""

    def start(self):
        raise NotImplementedError

    def push(self):
        """Makes the tool propagate A's latest changes (one-shot tools only)."""

    def wait_restarted(self, deadline):
        """After start(): waits until the tool reports it has exchanged
        everything."""
        raise NotImplementedError

    def stop(self):
        self.procs.stop()


class Omirrd(Tool):
    name = "omirrd"
    fanout = True
    restart_how = "`omirrd status --json`: every peer connected, queue 0, cursor = peer's last_seq"
    settings = ("`omirrd -f --host H --config DISTFILE --peers PEERS --root R --state-dir S` per host; "
                "Distfile `HOSTS = ( a b )` / `w:` / `/data -> ${HOSTS}`; peers on 127.0.0.1; "
                "default options (fsync of applied files on)")
    binary = None

    @staticmethod
    def version():
        return run([Omirrd.binary, "-V"]).strip()

    def prepare(self):
        top = os.path.dirname(self.hosts[0].dir)
        self.config, self.peers = os.path.join(top, "omirrd.conf"), os.path.join(top, "peers")
        lines = []
        for h in self.hosts:
            h.state = os.path.join(h.dir, "state")
            fp = run([self.binary, "keygen", "--state-dir", h.state]).strip()
            lines.append(f"{h.name} 127.0.0.1:{self.port()} {fp}\n")
        write(self.peers, "".join(lines))
        names = " ".join(h.name for h in self.hosts)
        write(self.config, f"HOSTS = ( {names} )\nw:\n/data -> ${{HOSTS}}\n")

    def start(self):
        for h in self.hosts:
            self.procs.start([self.binary, "-f", "--host", h.name, "--config", self.config,
                              "--peers", self.peers, "--root", h.root, "--state-dir", h.state],
                             os.path.join(h.dir, "omirrd.log"))

    def status(self, h):
        r = subprocess.run([self.binary, "status", "--json", "--state-dir", h.state],
                           capture_output=True, text=True)
        return json.loads(r.stdout) if r.returncode == 0 else None

    def wait_restarted(self, deadline):
        def settled():
            st = {h.name: self.status(h) for h in self.hosts}
            if None in st.values():
                return False
            return all(p["connected"] and p["queue"] == 0 and p["cursor"] == st[peer]["last_seq"]
                       for s in st.values() for peer, p in s["peers"].items())
        wait_for(settled, deadline, "omirrd peers not settled")


class Syncthing(Tool):
    name = "syncthing"
    fanout = True
    restart_how = ("REST: all devices connected, folder idle with nothing needed, "
                   "remote completion 100% on every instance")
    settings = ("one instance per host (monitor + child), own --home; listen tcp://127.0.0.1:PORT, "
                "devices with fixed addresses; global/local discovery, relays, NAT, STUN off; "
                "urAccepted=-1, crash reporting off, autoUpgradeIntervalH=0, setLowPriority=false, "
                "reconnectionIntervalS=1; folder sendreceive, fsWatcherEnabled=true, fsWatcherDelayS=1, "
                "rescanIntervalS=86400, weakHashThresholdPct=101 (weak hash off), caseSensitiveFS=true, "
                "scanProgressIntervalS=-1, fsync on (default), compression=metadata (default); "
                "GUI/REST on a Unix socket; STNODEFAULTFOLDER=1 STNOUPGRADE=1; "
                "a `.stfolder` marker is created in each tree beforehand")
    env = {"STNODEFAULTFOLDER": "1", "STNOUPGRADE": "1"}
    apikey = "omirr-bench-api-key"

    @staticmethod
    def version():
        return run(["syncthing", "--version"]).split(" (")[0]

    def prepare(self):
        for h in self.hosts:
            h.home = os.path.join(h.dir, "st")
            h.sock = os.path.join(h.home, "gui.sock")
            h.port = self.port()
            out = subprocess.run(["syncthing", "generate", f"--home={h.home}"], env={**os.environ, **self.env},
                                 capture_output=True, text=True, check=True)
            h.id = (out.stdout + out.stderr).split("Device ID:")[1].split()[0]
            os.mkdir(os.path.join(h.data, ".stfolder"))
        for h in self.hosts:
            self._configure(h)

    def _configure(self, h):
        path = os.path.join(h.home, "config.xml")
        tree = ET.parse(path)
        cfg = tree.getroot()
        defaults = cfg.find("defaults")
        for old in cfg.findall("folder") + cfg.findall("device"):
            cfg.remove(old)
        folder = ET.fromstring(ET.tostring(defaults.find("folder")))
        folder.attrib.update(id="bench", label="bench", path=h.data, type="sendreceive",
                             rescanIntervalS="86400", fsWatcherEnabled="true", fsWatcherDelayS="1")
        for tag, value in [("weakHashThresholdPct", "101"), ("caseSensitiveFS", "true"),
                           ("scanProgressIntervalS", "-1")]:
            folder.find(tag).text = value
        for d in folder.findall("device"):
            folder.remove(d)
        for i, other in enumerate(self.hosts):
            folder.insert(i + 1, ET.Element("device", id=other.id, introducedBy=""))
            dev = ET.fromstring(ET.tostring(defaults.find("device")))
            dev.attrib.update(id=other.id, name=other.name)
            dev.find("address").text = f"tcp://127.0.0.1:{other.port}"
            cfg.insert(i + 1, dev)
        cfg.insert(0, folder)
        gui = cfg.find("gui")
        gui.find("address").text = h.sock  # a path: a Unix socket
        gui.find("apikey").text = self.apikey
        opts = cfg.find("options")
        for tag, value in [("listenAddress", f"tcp://127.0.0.1:{h.port}"),
                           ("globalAnnounceEnabled", "false"), ("localAnnounceEnabled", "false"),
                           ("relaysEnabled", "false"), ("natEnabled", "false"),
                           ("startBrowser", "false"), ("urAccepted", "-1"),
                           ("autoUpgradeIntervalH", "0"), ("crashReportingEnabled", "false"),
                           ("setLowPriority", "false"), ("stunKeepaliveStartS", "0"),
                           ("announceLANAddresses", "false"), ("reconnectionIntervalS", "1")]:
            opts.find(tag).text = value
        tree.write(path)

    def start(self):
        for h in self.hosts:
            self.procs.start(["syncthing", "serve", f"--home={h.home}", "--no-browser"],
                             os.path.join(h.dir, "syncthing.log"), env=self.env)

    def rest(self, h, path):
        class UnixHTTP(http.client.HTTPConnection):
            def connect(conn):
                conn.sock = socket.socket(socket.AF_UNIX)
                conn.sock.settimeout(5)
                conn.sock.connect(h.sock)
        c = UnixHTTP("localhost")
        try:
            c.request("GET", path, headers={"X-API-Key": self.apikey})
            r = c.getresponse()
            return json.loads(r.read()) if r.status == 200 else None
        except OSError:
            return None
        finally:
            c.close()

    def wait_restarted(self, deadline):
        def settled():
            for h in self.hosts:
                conns = self.rest(h, "/rest/system/connections")
                st = self.rest(h, "/rest/db/status?folder=bench")
                if not conns or not st or st["state"] != "idle" or st["needTotalItems"] != 0:
                    return False
                for o in self.hosts:
                    if o is h:
                        continue
                    comp = self.rest(h, f"/rest/db/completion?folder=bench&device={o.id}")
                    if not conns["connections"].get(o.id, {}).get("connected") or \
                            not comp or comp["completion"] != 100:
                        return False
            return True
        wait_for(settled, deadline, "syncthing not idle", every=0.2)


def rsync_daemon(procs, host, port):
    """Starts an rsync daemon serving host.data as module `b` on 127.0.0.1:port."""
    conf = os.path.join(host.dir, "rsyncd.conf")
    write(conf, f"use chroot = no\npid file = {host.dir}/rsyncd.pid\n"
                f"lock file = {host.dir}/rsyncd.lock\n\n"
                f"[b]\npath = {host.data}\nread only = false\nuid = root\ngid = root\n"
                # without chroot, rsyncd would otherwise rewrite symlink targets
                f"munge symlinks = no\n")
    procs.start(["rsync", "--daemon", "--no-detach", f"--config={conf}", f"--port={port}",
                 "--address=127.0.0.1", f"--log-file={host.dir}/rsyncd.log"],
                os.path.join(host.dir, "rsyncd.out"))


class Lsyncd(Tool):
    name = "lsyncd"
    restart_how = "lsyncd logs that its startup rsync finished"
    settings = ("one-way A -> B: `lsyncd CONFIG` on A with `sync { default.rsync, source=A, "
                "target=\"rsync://127.0.0.1:PORT/b/\", delay=0, rsync={ archive=true, compress=false } }`, "
                "settings nodaemon, insist; B: `rsync --daemon --no-detach` (module b, read only=false, "
                "uid/gid root, use chroot=no, munge symlinks=no); the initial sync is lsyncd's startup rsync")

    @staticmethod
    def version():
        return "lsyncd " + run(["lsyncd", "-version"]).split()[1] + ", " + Rsync.version()

    def prepare(self):
        a, b = self.hosts
        self.rport = self.port()
        self.log = os.path.join(a.dir, "lsyncd.log")
        self.conf = os.path.join(a.dir, "lsyncd.conf.lua")
        write(self.conf, f"""settings {{ nodaemon = true, insist = true, logfile = "{self.log}" }}
sync {{
    default.rsync,
    source = "{a.data}",
    target = "rsync://127.0.0.1:{self.rport}/b/",
    delay = 0,
    rsync = {{ archive = true, compress = false }},
}}
""")

    def start(self):
        a, b = self.hosts
        rsync_daemon(self.procs, b, self.rport)
        wait_for(lambda: listening(self.rport), time.monotonic() + 30, "rsync daemon")
        self.starts_seen = self.finished_count()
        self.procs.start(["lsyncd", self.conf], os.path.join(a.dir, "lsyncd.out"))

    def finished_count(self):
        try:
            with open(self.log) as f:
                return sum("Startup of" in line and "finished" in line for line in f)
        except FileNotFoundError:
            return 0

    def wait_restarted(self, deadline):
        wait_for(lambda: self.finished_count() > self.starts_seen, deadline, "lsyncd startup")


class Unison(Tool):
    name = "unison"
    restart_how = "server started and one client run without -repeat exits"
    args = ["-batch", "-auto", "-times", "-fastcheck", "true", "-links", "true", "-log=false",
            "-contactquietly", "-confirmbigdel=false", "-ui", "text", "-terse"]
    settings = ("B: `unison -socket PORT -listen 127.0.0.1`; A: `unison A socket://127.0.0.1:PORT/B "
                + " ".join(args) + " -repeat 1` (Debian's 2.52 ships no unison-fsmonitor, so "
                "`-repeat watch` is impossible: the client rescans both trees every second); "
                "a private UNISON= dir per side for the archives")

    @staticmethod
    def version():
        return run(["unison", "-version"]).strip()

    def prepare(self):
        a, b = self.hosts
        self.sport = self.port()
        for h in self.hosts:
            h.env = {"UNISON": os.path.join(h.dir, "unison"), "HOME": h.dir}
            os.mkdir(h.env["UNISON"])

    def _server(self):
        b = self.hosts[1]
        self.procs.start(["unison", "-socket", str(self.sport), "-listen", "127.0.0.1"],
                         os.path.join(b.dir, "unison-server.log"), env=b.env)

    def _client(self, repeat):
        a, b = self.hosts
        wait_for(lambda: listening(self.sport), time.monotonic() + 30, "unison server")
        return self.procs.start(["unison", a.data, f"socket://127.0.0.1:{self.sport}/{b.data}", *self.args]
                                + (["-repeat", "1"] if repeat else []),
                                os.path.join(a.dir, "unison.log"), env=a.env)

    def start(self):
        self._server()
        self._client(repeat=True)

    def restart(self):
        self._server()
        self.oneshot = self._client(repeat=False)

    def wait_restarted(self, deadline):
        wait_for(lambda: self.oneshot.poll() is not None, deadline, "unison run")
        if self.oneshot.returncode != 0:
            raise RuntimeError(f"unison exited {self.oneshot.returncode}")


class Rsync(Tool):
    name = "rsync"
    restart_how = "daemon started and one push exits"
    settings = ("B: `rsync --daemon --no-detach` on 127.0.0.1 (module b, read only=false, uid/gid root, "
                "use chroot=no, munge symlinks=no); A: `rsync -a --delete A/ rsync://127.0.0.1:PORT/b/` once per phase "
                "(delta transfer, no --whole-file); latency: that command in a back-to-back loop")

    @staticmethod
    def version():
        return " ".join(run(["rsync", "--version"]).split()[:3])

    def prepare(self):
        self.rport = self.port()
        self.command = ["rsync", "-a", "--delete", self.hosts[0].data + "/",
                        f"rsync://127.0.0.1:{self.rport}/b/"]

    def start(self):
        rsync_daemon(self.procs, self.hosts[1], self.rport)
        wait_for(lambda: listening(self.rport), time.monotonic() + 30, "rsync daemon")
        self.push()

    def push(self):
        self.last = self.procs.start(self.command, os.path.join(self.hosts[0].dir, "rsync.log"))

    def start_loop(self):
        rsync_daemon(self.procs, self.hosts[1], self.rport)
        wait_for(lambda: listening(self.rport), time.monotonic() + 30, "rsync daemon")
        self.procs.start(["sh", "-c", 'while :; do "$@"; done', "loop", *self.command],
                         os.path.join(self.hosts[0].dir, "rsync.log"))

    def wait_restarted(self, deadline):
        wait_for(lambda: self.last.poll() is not None, deadline, "rsync push")
        if self.last.returncode != 0:
            raise RuntimeError(f"rsync exited {self.last.returncode}")


class RsyncFsync(Rsync):
    """rsync made as durable as omirrd: the receiving daemon fsyncs every
    file it writes (`--fsync`, rsync 3.2.4+, passed on to the server).
    Not in the default set; a reference for what fsync costs, not a target."""
    name = "rsync-fsync"
    settings = Rsync.settings.replace("rsync -a --delete", "rsync -a --delete --fsync")

    def prepare(self):
        super().prepare()
        self.command.insert(3, "--fsync")


TOOL_CLASSES = {c.name: c for c in (Omirrd, Syncthing, Lsyncd, Unison, Rsync, RsyncFsync)}


# ------------------------------------------------------------------ phases

class Bench:
    def __init__(self, args, work):
        self.args, self.work = args, work
        self.timeout = args.timeout
        self.results = {}     # workload -> tool -> {"initial": Phase|str, "edit": ..., "rss": KiB}
        self.restart = {}     # tool -> Phase|str
        self.rename = {}      # tool -> Phase|str
        self.latency = {}     # tool -> [ms]|str
        self.fanout = {}      # tool -> Phase|str
        self.cp = None        # (seconds without sync, seconds with sync)
        self.ingest = {}      # tool -> (copy seconds, Phase from the copy's end) | str
        self.million = None   # {"initial": Phase|str, "rss": [MiB per daemon], "index": [B/entry], "restart": Phase|str}

    def gen(self, workload):
        path = os.path.join(self.work, "gen", workload)
        if not os.path.exists(path):
            log(f"generating {workload}")
            run([sys.executable, WORKLOADS_PY, "gen", workload, path])
        return path

    def setup(self, cls, label, names, workload=None):
        """A fresh T/ for one measurement: hosts `names`, the first holding
        a copy of `workload` (or nothing). T/ stays until the end of the run:
        ext4 makes inode allocation slow for a while after many files were
        deleted (`recently_deleted`), which would slow down the next tool."""
        top = os.path.join(self.work, f"{cls.name}-{label}")
        try:
            hosts = [Host(top, n) for n in names]
            if workload:
                # in a directory of its own, so that the rename phase moves one directory
                run(["cp", "-a", self.gen(workload), os.path.join(hosts[0].data, workload)])
            tool = cls(hosts)
            tool.prepare()
            os.sync()
            return tool
        except BaseException:
            shutil.rmtree(top, ignore_errors=True)
            raise

    def deadline(self):
        return time.monotonic() + self.timeout

    def timed(self, tool, act, ref=None, every=POLL):
        """Times act() (starting the tool, or a push after a change on A)
        until every other host holds A's tree: `ref`, or A as it is once
        act() has run."""
        phase = Phase()
        act()
        ref = ref or Reference(tool.hosts[0].data)
        return phase.finish(wait_converged(ref, [h.data for h in tool.hosts[1:]], self.deadline(), every))

    def measure(self, what, fn):
        """Runs fn(); returns its value, or "timeout"/"error" (logged)."""
        try:
            return fn()
        except Timeout as e:
            log(f"  {what}: timeout ({e})")
            return "timeout"
        except Exception:
            log(f"  {what}: error\n{traceback.format_exc()}")
            return "error"

    def workload(self, cls, workload):
        log(f"{cls.name} / {workload}")
        res = self.results.setdefault(workload, {}).setdefault(cls.name, {})
        made = self.measure("setup", lambda: self.setup(cls, workload, "ab", workload))
        if isinstance(made, str):
            res["initial"] = made
            return
        tool = made
        a, b = tool.hosts
        ref = Reference(a.data)
        try:
            sampler = RssSampler(tool.procs)

            res["initial"] = self.measure("initial sync", lambda: self.timed(tool, tool.start, ref))
            log(f"  initial: {fmt_phase(res['initial'])}")
            if workload not in EDITS:
                res["edit"] = "n/a"
            elif isinstance(res["initial"], Phase):
                def edit():
                    run([sys.executable, WORKLOADS_PY, "edit", workload, os.path.join(a.data, workload)])
                    return self.timed(tool, tool.push)
                res["edit"] = self.measure("re-sync", edit)
                log(f"  re-sync: {fmt_phase(res['edit'])}")
            if workload == "small" and isinstance(res.get("edit"), Phase):
                def rename():
                    os.rename(os.path.join(a.data, "small"), os.path.join(a.data, "small.renamed"))
                    return self.timed(tool, tool.push)
                self.rename[cls.name] = self.measure("rename", rename)
                log(f"  rename: {fmt_phase(self.rename[cls.name])}")
            res["rss"] = sampler.stop()
            tool.stop()
            log(f"  peak RSS: {res['rss'] / 1024:.1f} MiB")
            if workload == "small" and not self.args.skip_restart and isinstance(res.get("edit"), Phase):
                def restart():
                    phase = Phase()
                    getattr(tool, "restart", tool.start)()
                    tool.wait_restarted(self.deadline())
                    phase = phase.finish(time.monotonic())
                    if digest(b.data) != digest(a.data):
                        raise RuntimeError("trees differ after the restart")
                    return phase
                self.restart[cls.name] = self.measure("restart", restart)
                log(f"  restart: {fmt_phase(self.restart[cls.name])}")
        finally:
            tool.stop()

    def fan_out(self, cls):
        log(f"{cls.name} / fan-out small to 2 hosts")
        made = self.measure("setup", lambda: self.setup(cls, "fanout", "abc", "small"))
        if isinstance(made, str):
            self.fanout[cls.name] = made
            return
        tool = made
        ref = Reference(tool.hosts[0].data)
        try:
            self.fanout[cls.name] = self.measure("fan-out", lambda: self.timed(tool, tool.start, ref))
            log(f"  fan-out: {fmt_phase(self.fanout[cls.name])}")
        finally:
            tool.stop()

    def propagation(self, cls):
        log(f"{cls.name} / latency")
        made = self.measure("setup", lambda: self.setup(cls, "latency", "ab"))
        if isinstance(made, str):
            self.latency[cls.name] = made
            return
        tool = made
        a, b = tool.hosts
        try:
            def latencies():
                getattr(tool, "start_loop", tool.start)()
                out = []
                for i in range(LATENCY_FILES + 1):  # file 0 is the warm-up
                    name = f"lat{i:02d}"
                    with open(os.path.join(a.data, name), "wb") as f:
                        f.write(os.urandom(LATENCY_SIZE))
                    closed = time.monotonic()
                    deadline = closed + (60 if i == 0 else 30)
                    target = os.path.join(b.data, name)
                    while True:
                        try:
                            if os.stat(target).st_size == LATENCY_SIZE:
                                break
                        except FileNotFoundError:
                            pass
                        if time.monotonic() > deadline:
                            raise Timeout(f"{name} did not arrive")
                        time.sleep(0.001)
                    if i:
                        out.append((time.monotonic() - closed) * 1000)
                return out
            self.latency[cls.name] = self.measure("latency", latencies)
        finally:
            tool.stop()

    def live_ingest(self, cls):
        """`cp -a` of `small` into A while the tool runs on empty trees."""
        log(f"{cls.name} / live ingest of small")
        made = self.measure("setup", lambda: self.setup(cls, "ingest", "ab"))
        if isinstance(made, str):
            self.ingest[cls.name] = made
            return
        tool = made
        a, b = tool.hosts
        src = self.gen("small")
        try:
            def ingest():
                getattr(tool, "start_loop", tool.start)()
                write(os.path.join(a.data, "warm-up"), "up\n")
                wait_for(lambda: os.path.exists(os.path.join(b.data, "warm-up")),
                         time.monotonic() + 60, "the warm-up file did not arrive")
                phase = Phase()
                run(["cp", "-a", src, os.path.join(a.data, "small")])
                copied = time.monotonic()
                copy_seconds = copied - phase.t0
                phase.t0 = copied  # the time counts from the copy's end; bytes from its start
                done = wait_converged(Reference(a.data), [b.data], self.deadline())
                return copy_seconds, phase.finish(max(done, copied))
            self.ingest[cls.name] = self.measure("live ingest", ingest)
            r = self.ingest[cls.name]
            log("  live ingest: " + (f"copy {r[0]:.2f} s, then {fmt_phase(r[1])}" if isinstance(r, tuple) else r))
        finally:
            tool.stop()

    def gen_million(self, path):
        """--million-dirs directories of MILLION_PER_DIR files of MILLION_SIZE
        bytes at `path`, each file's content derived from its name."""
        log(f"generating million ({self.args.million_dirs * MILLION_PER_DIR} files)")
        tmp = path + ".tmp"
        for d in range(self.args.million_dirs):
            dd = os.path.join(tmp, f"d{d:04d}")
            os.makedirs(dd)
            for i in range(MILLION_PER_DIR):
                name = f"f{i:04d}"
                body = f"{d:04d}/{name} ".encode() * (MILLION_SIZE // 11 + 1)
                with open(os.path.join(dd, name), "wb") as f:
                    f.write(body[:MILLION_SIZE])
        os.rename(tmp, path)

    def million_files(self):
        log("omirrd / million files")
        res = self.million = {}
        top = os.path.join(self.work, "omirrd-million")
        hosts = [Host(top, n) for n in "ab"]
        failed = self.measure("generate", lambda: self.gen_million(os.path.join(hosts[0].data, "million")))
        if failed:  # "timeout" or "error"
            res["initial"] = failed
            return
        tool = Omirrd(hosts)
        tool.prepare()
        os.sync()
        try:
            ref = Reference(hosts[0].data)
            sampler = RssSampler(tool.procs)
            # Counting a million entries takes the poller seconds of CPU
            # the daemons would miss: poll every MILLION_POLL s instead.
            res["initial"] = self.measure("initial sync",
                                          lambda: self.timed(tool, tool.start, ref, MILLION_POLL))
            log(f"  initial: {fmt_phase(res['initial'])}")
            if isinstance(res["initial"], Phase):
                # the receiver records what it applied; wait until both say they are settled
                self.measure("settle", lambda: tool.wait_restarted(self.deadline()))
            sampler.stop()
            res["rss"] = [kib / 1024 for kib in sampler.by_pid.values()]
            tool.stop()
            entries = ref.count + 1  # the tree's entries and its root
            res["index"] = [os.path.getsize(os.path.join(h.state, "index.redb")) / entries for h in hosts]
            log(f"  peak RSS per daemon (MiB): {', '.join(f'{m:.0f}' for m in res['rss'])}; "
                f"index bytes per entry: {', '.join(f'{x:.0f}' for x in res['index'])}")
            if isinstance(res["initial"], Phase):
                def restart():
                    phase = Phase()
                    tool.start()
                    tool.wait_restarted(self.deadline())
                    return phase.finish(time.monotonic())
                res["restart"] = self.measure("restart", restart)
                log(f"  restart: {fmt_phase(res['restart'])}")
        finally:
            tool.stop()

    def cp_baseline(self):
        log("cp baseline / large")
        src = os.path.join(self.gen("large"), "big.bin")
        dst_dir = os.path.join(self.work, "cp")
        os.makedirs(dst_dir)
        dst = os.path.join(dst_dir, "big.bin")
        subprocess.run(["cat", src], stdout=subprocess.DEVNULL, check=True)  # cached, as for the tools
        times = []
        for with_sync in (False, True):
            runs = []
            for _ in range(3):
                os.sync()
                t0 = time.monotonic()
                run(["cp", src, dst])
                if with_sync:
                    os.sync()
                runs.append(time.monotonic() - t0)
                os.remove(dst)
                os.sync()
            times.append(statistics.median(runs))
        self.cp = tuple(times)
        shutil.rmtree(dst_dir)

    def run(self):
        for w in self.args.workloads:
            for t in self.args.tools:
                self.workload(TOOL_CLASSES[t], w)
        if not self.args.skip_fanout:
            for t in self.args.tools:
                if TOOL_CLASSES[t].fanout:
                    self.fan_out(TOOL_CLASSES[t])
        if not self.args.skip_latency:
            for t in self.args.tools:
                self.propagation(TOOL_CLASSES[t])
        if not self.args.skip_ingest:
            for t in self.args.tools:
                self.live_ingest(TOOL_CLASSES[t])
        if self.args.million:
            self.million_files()
        if "large" in self.args.workloads and not self.args.skip_cp:
            self.cp_baseline()


# ------------------------------------------------------------------ report

def fmt_bytes(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def fmt_phase(p):
    return f"{p.seconds:.2f} s, {fmt_bytes(p.bytes)}" if isinstance(p, Phase) else str(p)


def cell(p, field):
    if not isinstance(p, Phase):
        return "–" if p is None else str(p)
    return f"{p.seconds:.2f}" if field == "seconds" else fmt_bytes(p.bytes)


def ratio(ours, theirs, field):
    if not (isinstance(ours, Phase) and isinstance(theirs, Phase)) or getattr(theirs, field) == 0:
        return "–"
    return f"{getattr(ours, field) / getattr(theirs, field):.2f}"


def report(bench, header):
    out = [header]
    for w in WORKLOADS:
        if w not in bench.results:
            continue
        rows = bench.results[w]
        ours = rows.get("omirrd", {})
        out += [f"\n### Workload `{w}`\n",
                "| tool | initial sync (s) | initial bytes | re-sync after edit (s) | re-sync bytes "
                "| peak RSS (MiB) | omirrd/tool time (initial / re-sync) | omirrd/tool bytes (initial / re-sync) |",
                "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for t, r in rows.items():
            init, edit = r.get("initial"), r.get("edit")
            rss = f"{r['rss'] / 1024:.1f}" if "rss" in r else "–"
            out.append(f"| {t} | {cell(init, 'seconds')} | {cell(init, 'bytes')} | {cell(edit, 'seconds')} "
                       f"| {cell(edit, 'bytes')} | {rss} "
                       f"| {ratio(ours.get('initial'), init, 'seconds')} / {ratio(ours.get('edit'), edit, 'seconds')} "
                       f"| {ratio(ours.get('initial'), init, 'bytes')} / {ratio(ours.get('edit'), edit, 'bytes')} |")
    if bench.latency:
        out += ["\n### Propagation latency (20 files of 4 KiB, one at a time, close on A → complete on B)\n",
                "| tool | p50 (ms) | p95 (ms) | max (ms) |", "|---|---:|---:|---:|"]
        for t, ms in bench.latency.items():
            if isinstance(ms, list):
                q = statistics.quantiles(ms, n=20, method="inclusive")
                out.append(f"| {t} | {statistics.median(ms):.1f} | {q[18]:.1f} | {max(ms):.1f} |")
            else:
                out.append(f"| {t} | {ms} | {ms} | {ms} |")
        if any(t.startswith("rsync") for t in bench.latency):
            out.append("\nrsync has no watcher: its figures are for `rsync -a --delete` run in a "
                       "back-to-back loop. unison runs with `-repeat 1`.")
    if bench.rename:
        out += ["\n### Directory rename (`mv small small.renamed` on A: one directory holding "
                "the whole `small` tree, 10,000 files, 83 MiB, after its re-sync)\n",
                "| tool | time (s) | bytes | omirrd/tool bytes |", "|---|---:|---:|---:|"]
        for t, p in bench.rename.items():
            out.append(f"| {t} | {cell(p, 'seconds')} | {cell(p, 'bytes')} "
                       f"| {ratio(bench.rename.get('omirrd'), p, 'bytes')} |")
    if bench.restart:
        out += ["\n### Restart with nothing changed (`small`, converged; both hosts stopped and started)\n",
                "| tool | time (s) | bytes | done when |", "|---|---:|---:|---|"]
        for t, p in bench.restart.items():
            out.append(f"| {t} | {cell(p, 'seconds')} | {cell(p, 'bytes')} | {TOOL_CLASSES[t].restart_how} |")
    if bench.fanout:
        out += ["\n### Fan-out: initial sync of `small` from A to B and C at once\n",
                "| tool | 2 hosts (s) | 2 hosts bytes | 3 hosts (s) | 3 hosts bytes | time 3/2 | bytes 3/2 |",
                "|---|---:|---:|---:|---:|---:|---:|"]
        for t, p in bench.fanout.items():
            two = bench.results.get("small", {}).get(t, {}).get("initial")
            out.append(f"| {t} | {cell(two, 'seconds')} | {cell(two, 'bytes')} | {cell(p, 'seconds')} "
                       f"| {cell(p, 'bytes')} | {ratio(p, two, 'seconds')} | {ratio(p, two, 'bytes')} |")
    if bench.ingest:
        out += ["\n### Live ingest: `cp -a` of `small` (10,000 files, 83 MiB) into A while the tool runs\n",
                "| tool | copy (s) | converged after the copy's end (s) | bytes |", "|---|---:|---:|---:|"]
        for t, r in bench.ingest.items():
            if isinstance(r, tuple):
                out.append(f"| {t} | {r[0]:.2f} | {cell(r[1], 'seconds')} | {cell(r[1], 'bytes')} |")
            else:
                out.append(f"| {t} | {r} | {r} | {r} |")
        if any(t.startswith("rsync") for t in bench.ingest):
            out.append("\nrsync: its back-to-back `rsync -a --delete` loop, as for latency.")
    if bench.million is not None:
        m = bench.million
        n = bench.args.million_dirs * MILLION_PER_DIR
        out += [f"\n### A million files (omirrd; {n:,} files of {MILLION_SIZE} bytes, "
                f"{MILLION_PER_DIR:,} per directory; A holds them, B starts empty)\n",
                "| initial sync (s) | initial bytes | peak RSS per daemon (MiB) | index bytes per entry "
                "| restart, nothing changed (s) |", "|---:|---:|---:|---:|---:|",
                f"| {cell(m.get('initial'), 'seconds')} | {cell(m.get('initial'), 'bytes')} "
                f"| {' / '.join(f'{x:.0f}' for x in m.get('rss', [])) or '–'} "
                f"| {' / '.join(f'{x:.0f}' for x in m.get('index', [])) or '–'} "
                f"| {cell(m.get('restart'), 'seconds')} |"]
    if bench.cp:
        out += ["\n### Local baseline: `cp A/big.bin C/big.bin` (`large`, 512 MiB, same disk, source cached; median of 3)\n",
                "| | time (s) | MiB/s |", "|---|---:|---:|"]
        for label, s in zip(("cp", "cp + sync"), bench.cp):
            out.append(f"| {label} | {s:.2f} | {512 / s:.0f} |")
    return "\n".join(out) + "\n"


def header(args, work):
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), "unknown")
    fs = run(["df", "--output=source,fstype,target", work]).splitlines()[1].split()
    lines = ["## Side-by-side: omirrd, syncthing, lsyncd, unison, rsync\n",
             f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
             f"- Kernel: {platform.release()}; CPU: {cpu}; nproc: {os.cpu_count()}",
             f"- Bench directory: {args.dir} on {fs[1]} ({fs[0]}, mounted at {fs[2]})",
             f"- Command: `{os.environ.get('BENCH_COMMAND', shlex.join(sys.argv))}`",
             "- Two hosts on 127.0.0.1 in a private network namespace; A holds the workload, "
             "B starts empty. Bytes are `lo` tx bytes (payload + headers) from the start of a phase "
             f"until {SETTLE:.0f} s after convergence; convergence is B's digest equal to A's "
             "(`bench/workloads.py digest`), polled every 0.1 s. Peak RSS is the maximum, sampled "
             "every 0.1 s, of the summed VmHWM of every process of the tool on both hosts. "
             "See the header of `bench/bench.py`.",
             "- Tools and settings:"]
    for t in args.tools:
        cls = TOOL_CLASSES[t]
        lines.append(f"  - **{t}** ({cls.version()}): {cls.settings}")
    return "\n".join(lines) + "\n"


def write_doc(path, text, label=""):
    old = open(path).read() if os.path.exists(path) else ""
    begin, end = (BEGIN, END) if not label else (f"<!-- bench:{label}:begin -->", f"<!-- bench:{label}:end -->")
    block = f"{begin}\n{text}{end}"
    # A marker counts only on a line of its own, so that prose may name it.
    lines = old.split("\n")
    if begin in lines and end in lines[lines.index(begin):]:
        b = lines.index(begin)
        e = b + lines[b:].index(end)
        new = "\n".join(lines[:b] + [block] + lines[e + 1:])
    else:
        new = old + ("\n" if old and not old.endswith("\n") else "") + block + "\n"
    with open(path, "w") as f:
        f.write(new)


# -------------------------------------------------------------- entry points

def parse_args(argv):
    p = argparse.ArgumentParser(prog="bench/run", description=__doc__.split("\n")[0])
    p.add_argument("--doc", default=os.path.join(REPO, "docs", "benchmarks.md"),
                   help="Markdown file to write between the bench markers (default: docs/benchmarks.md)")
    p.add_argument("--tools", default=",".join(TOOLS), help=f"comma-separated subset of {','.join(TOOLS)} (default: all of them), "
                        f"or {','.join(EXTRA_TOOLS)}")
    p.add_argument("--workloads", default=",".join(WORKLOADS),
                   help=f"comma-separated subset of {','.join(WORKLOADS)}")
    p.add_argument("--quick", action="store_true", help="skip the large workload (and the cp baseline)")
    p.add_argument("--skip-latency", action="store_true")
    p.add_argument("--skip-restart", action="store_true")
    p.add_argument("--skip-fanout", action="store_true")
    p.add_argument("--skip-cp", action="store_true")
    p.add_argument("--skip-ingest", action="store_true", help="skip the live-ingest phase")
    p.add_argument("--million", action="store_true",
                   help="add the million-file phase (omirrd only; two trees of a million files take "
                        "about 8 GiB on ext4 or tmpfs, and it is long)")
    p.add_argument("--million-dirs", type=int, default=1000,
                   help="directories of 1,000 files in the million-file phase (default 1000; fewer for a try)")
    p.add_argument("--dir", default=BENCH_ROOT,
                   help=f"where the trees go (default {BENCH_ROOT}, on the normal disk; "
                        "e.g. /dev/shm/omirr-bench for tmpfs)")
    p.add_argument("--label", default="",
                   help="name of this run's block in --doc: with --label tmpfs, the run replaces only "
                        "the block between <!-- bench:tmpfs:begin --> and <!-- bench:tmpfs:end -->")
    p.add_argument("--timeout", type=float, default=300, help="seconds per phase (default 300)")
    p.add_argument("--keep", action="store_true",
                   help="keep the trees and the tools' logs under /var/tmp/omirr-bench (for a look afterwards)")
    p.add_argument("--in-netns", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.tools = [t for t in args.tools.split(",") if t]
    args.workloads = [w for w in args.workloads.split(",") if w and not (args.quick and w == "large")]
    for t in args.tools:
        if t not in TOOLS + EXTRA_TOOLS:
            p.error(f"unknown tool {t}")
    for w in args.workloads:
        if w not in WORKLOADS:
            p.error(f"unknown workload {w}")
    return args


def install_and_build():
    """Outside the namespace: Debian packages if missing; omirrd unless $OMIRRD."""
    missing = [p for p in PACKAGES
               if subprocess.run(["dpkg-query", "-W", "-f=${Status}", p], capture_output=True,
                                 text=True).stdout != "install ok installed"]
    if missing:
        log(f"apt-get install -y {' '.join(missing)}")
        subprocess.run(["apt-get", "install", "-y", *missing], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    if os.environ.get("OMIRRD"):
        return os.path.abspath(os.environ["OMIRRD"])
    build = ["cargo", "build", "--release", "-p", "omirrd"]
    user = os.environ.get("SUDO_USER")
    if user and user != "root":  # build as the user who ran sudo, with their toolchain
        build = ["sudo", "-u", user, "-H", "bash", "-lc", shlex.join(build)]
    log(" ".join(build))
    subprocess.run(build, check=True, cwd=REPO)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
    return os.path.join(target, "release", "omirrd")


def main(argv):
    args = parse_args(argv)
    if os.geteuid() != 0:
        sys.exit("bench/run: must run as root (network namespace, packages, rsync daemon)")
    if not args.in_netns:
        binary = install_and_build()
        os.environ["OMIRRD"] = binary
        os.environ.setdefault("BENCH_COMMAND", shlex.join(["bench/run", *argv]))
        os.execvp("unshare", ["unshare", "--net", "--", sys.executable, os.path.abspath(__file__),
                              "--in-netns", *argv])
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    Omirrd.binary = os.environ["OMIRRD"]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    os.makedirs(args.dir, exist_ok=True)
    work = tempfile.mkdtemp(prefix="run.", dir=args.dir)
    started = time.monotonic()
    try:
        head = header(args, work)
        bench = Bench(args, work)
        bench.run()
        text = report(bench, head)
        text += f"\nThe whole run took {(time.monotonic() - started) / 60:.1f} minutes.\n"
        print(text)
        write_doc(args.doc, text, args.label)
        log(f"wrote {args.doc}")
    finally:
        for procs in list(Procs.live):
            procs.stop()
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
            try:
                os.rmdir(args.dir)
            except OSError:
                pass


if __name__ == "__main__":
    main(sys.argv[1:])
