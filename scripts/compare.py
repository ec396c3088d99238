#!/usr/bin/env python3
"""Runs the same benchmark scenarios against several SockJS push servers, in one run, with the
server pinned to one core and the load (pushnote-bench) to the other.

Each server is given as NAME:FORMAT=COMMAND, where FORMAT is the bus format it reads
(`pushnote` or `original`, see `pushnote-bench fanout --help`; or `redis`, pushnote's on Redis)
and COMMAND starts it in the foreground with {port} and {bus} in place of its HTTP port and the
ZeroMQ endpoint it binds its SUB socket at (for `redis`, the `redis://127.0.0.1:PORT` the
command starts a Redis at before the server, and the load publishes into). The script starts the server afresh for each scenario, waits for its port,
runs `pushnote-bench fanout` against it, stops it, and appends one JSON line per run to
--out (default bench-results.jsonl), then prints a table.

With --repeat N each scenario runs N rounds, every server in turn in each round (the order
turned by one each round: the first server of a round can take more CPU than the same build run
second), and the table gives each figure's median over the rounds (losses: the worst round). Tail latencies on a
shared machine drift by tens of percent from one minute to the next; interleaved rounds and
medians keep that drift out of the comparison. Scenarios joined with + run in turn within each
round (`max+cmax`: in each round, every server's broadcast round, then every server's channel
round), and the table's "÷ notify_all's" rows divide a channel figure by the broadcast figure
of the same server in the same round.

    scripts/compare.py \\
      'pushnote:pushnote=target/release/pushnote-server --single --port {port} --address 127.0.0.1 --mq_socket {bus} --log warn' \\
      'node:original=../shared/peers/start.sh node {port} {bus}'

Scenarios (--scenarios, comma-separated, default all):
  max    --sessions sessions, broadcasts as fast as the slowest session takes them
  1m     --sessions sessions, a fixed 1,000,000 deliveries/s (latency at that rate)
  light  --sessions sessions, 1 broadcast per second for 20 s (latency at light load)
  idle   --idle-sessions sessions, idle: RSS per session, and connects/s
  t1k    1,000 sessions of one user each, 1,000 messages/s each to one random user
  t19k   the same with --idle-sessions sessions (targeted latency at N = 19,500)
  t200   10,000 sessions of one user each, 200 messages/s in all for 20 s, each to one random
         user: the targeted path at a light rate over many users
  t20k   10,000 sessions of one user each, 20,000 messages/s in all, each to one random user:
         the targeted path at a high rate (server CPU and latency against the floor's)
  rtt    no server: `pushnote-bench echo` on the server's core and `pushnote-bench rtt` on the
         load's, 1,000 round trips/s for 10 s; the machine's own latency over the two hops a
         targeted message takes, reported under the name `loopback`
  cmax, c1m, clight
         max, 1m and light with every session in one channel (`fanout --channel bench`), the
         messages published on it instead of broadcast: pushnote's channels beside notify_all
  pmax, p1m
         max and 1m with each broadcast padded (`fanout --pad`) to the size of a channel
         message in its envelope: notify_all carrying as many bytes per delivery as cmax and
         c1m, to tell what the envelope's bytes cost from what channels' routing does
  prmax, pr1m, prlight
         max, 1m and light with every session also in one presence channel, each as its own
         user (`fanout --presence-channel presence-bench`), the messages broadcast as in max,
         1m and light: what presence costs broadcasts (the server needs
         --presence-max-members of at least --sessions)
Servers named in --no-targeted (default none: floor-raw matches the original format's
recipients as plain tokens) skip t1k, t19k, t200 and t20k; servers of the original bus format, and
those named in --no-channels (builds from before channels), skip the channel scenarios; those
and the ones named in --no-presence skip the presence scenarios.
"""

import argparse
import json
import os
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.join(HERE, "..", "target", "release", "pushnote-bench")


def wait_port(port, proc, limit=30.0):
    deadline = time.time() + limit
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port} after {limit} s")


# The channel scenarios: each is its broadcast scenario with every session in this channel.
CHANNEL_SCENARIOS = {"cmax": "max", "c1m": "1m", "clight": "light"}
CHANNEL = "bench"
# The padded scenarios: each is its broadcast scenario, each broadcast as large on the wire as
# a channel message in its envelope.
PADDED_SCENARIOS = {"pmax": "max", "p1m": "1m"}
# The presence scenarios: each is its broadcast scenario with every session in a presence
# channel.
PRESENCE_SCENARIOS = {"prmax": "max", "pr1m": "1m", "prlight": "light"}
PRESENCE_CHANNEL = "presence-bench"
# `{"channel":"bench","event":"tick","data":` and `}` around the data, less `,"p":""`.
PAD = len('{"channel":"%s","event":"tick","data":}' % CHANNEL) - len(',"p":""')


def scenario_args(name, a):
    if name in CHANNEL_SCENARIOS:
        return scenario_args(CHANNEL_SCENARIOS[name], a) + ["--channel", CHANNEL]
    if name in PRESENCE_SCENARIOS:
        return scenario_args(PRESENCE_SCENARIOS[name], a) + ["--presence-channel",
                                                              PRESENCE_CHANNEL]
    if name in PADDED_SCENARIOS:
        return scenario_args(PADDED_SCENARIOS[name], a) + ["--pad", str(PAD)]
    if name == "max":
        return ["--sessions", str(a.sessions), "--duration", str(a.duration)]
    if name == "1m":
        return ["--sessions", str(a.sessions), "--rate", str(1_000_000 / a.sessions),
                "--duration", str(a.duration)]
    if name == "light":
        return ["--sessions", str(a.sessions), "--rate", "1", "--duration", "20"]
    if name == "idle":
        return ["--sessions", str(a.idle_sessions), "--rate", "1", "--duration", "2",
                "--settle", "3"]
    if name in ("t1k", "t19k"):
        n = 1000 if name == "t1k" else a.idle_sessions
        return ["--sessions", str(n), "--targeted", "--rate", "1000", "--duration", "10"]
    if name == "t200":
        return ["--sessions", "10000", "--targeted", "--rate", "200", "--duration", "20"]
    if name == "t20k":
        return ["--sessions", "10000", "--targeted", "--rate", "20000", "--duration", "10"]
    raise SystemExit(f"unknown scenario {name}")


def result_of(out, label, scenario):
    """The JSON line a pushnote-bench run printed (or an error in its place), with the scenario
    and the exit status."""
    line = next((l for l in out.stdout.splitlines() if l.startswith("{")), None)
    result = json.loads(line) if line else {"label": label, "error": "no result"}
    result["scenario"] = scenario
    result["exit"] = out.returncode
    return result


def run_rtt(a, port):
    """The `rtt` scenario: the machine's loopback round trip, pinned as a server and its load."""
    echo = subprocess.Popen(["taskset", "-c", a.server_cpu, a.bench, "echo",
                             "--listen", f"127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        wait_port(port, echo)
        cmd = ["taskset", "-c", a.load_cpu, a.bench, "rtt", "--addr", f"127.0.0.1:{port}",
               "--rate", "1000", "--duration", "10", "--label", "loopback"]
        print(f"== loopback / rtt: {' '.join(shlex.quote(c) for c in cmd)}",
              file=sys.stderr, flush=True)
        out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, timeout=120)
        return result_of(out, "loopback", "rtt")
    finally:
        os.killpg(echo.pid, signal.SIGKILL)
        echo.wait()


def run_one(server, scenario, a, port, bus):
    name, fmt, command = server
    cmd = command.replace("{port}", str(port)).replace("{bus}", bus)
    env = dict(os.environ)
    env.setdefault("PUSHNOTE_SECRET", "compare-" + os.urandom(24).hex())
    srv = subprocess.Popen(["taskset", "-c", a.server_cpu, "bash", "-c", "exec " + cmd],
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    try:
        wait_port(port, srv)
        time.sleep(0.5)
        bench = ["taskset", "-c", a.load_cpu, a.bench, "fanout",
                 "--url", f"http://127.0.0.1:{port}/sockjs", "--bus", bus,
                 "--bus-format", "pushnote" if fmt == "redis" else fmt, "--pid", str(srv.pid), "--label", name]
        bench += scenario_args(scenario, a)
        print(f"== {name} / {scenario}: {' '.join(shlex.quote(b) for b in bench)}",
              file=sys.stderr, flush=True)
        out = subprocess.run(bench, stdout=subprocess.PIPE, text=True, timeout=600, env=env)
        return result_of(out, name, scenario)
    finally:
        try:
            os.killpg(srv.pid, signal.SIGTERM)
            srv.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(srv.pid, signal.SIGKILL)
            srv.wait()
        time.sleep(1)


def fmt_num(v, unit=""):
    if v is None:
        return "-"
    if isinstance(v, float):
        v = round(v, 2) if v < 100 else round(v)
    return f"{v:,}{unit}"


def figure(results, name, scenario, key, pick=statistics.median):
    """`key` of server `name` in `scenario`, from the newest run that has it: the median of its
    rounds (or another `pick` of them), or None."""
    mine = [r for r in results
            if r["label"] == name and r["scenario"] == scenario and r.get(key) is not None]
    if not mine:
        return None
    newest = max(r.get("run", "") for r in mine)
    return pick([r[key] for r in mine if r.get("run", "") == newest])


def round_ratio(results, mine, other, key):
    """The median, over the newest run's rounds, of `key` of `mine` divided by `key` of `other`
    in the same round, or None; each is a (server, scenario)."""
    def by_round(label, scenario):
        return {(r.get("run", ""), r.get("round")): r[key] for r in results
                if r["label"] == label and r["scenario"] == scenario and r.get(key)}
    a, b = by_round(*mine), by_round(*other)
    both = [k for k in a if k in b]
    if not both:
        return None
    newest = max(run for run, _ in both)
    return statistics.median(a[k] / b[k] for k in both if k[0] == newest)


def floor_ratio(results, name):
    """The median, over the newest run's rounds, of `name`'s p99 at 1 M/s divided by
    floor-raw's p99 at light load in the same round, or None. Both are about one pass of writes
    over the 10,000 sockets: the ratio says how much slower than the bare floor's single pass a
    server's pass is while it carries a hundred times the messages."""
    return round_ratio(results, (name, "1m"), ("floor-raw", "light"), "latency_p99_us")


def table(results):
    names = list(dict.fromkeys(r["label"] for r in results if r["scenario"] != "rtt"))
    # Losses, duplicates and reorderings in one figure, on copies: the caller's results stay
    # as the load reported them.
    results = [dict(r, faults=sum(r.get(k) or 0 for k in ("lost", "duplicated", "reordered")))
               if "lost" in r else r for r in results]
    rows = [
        ("max deliveries/s (fan-out)", "max", "deliveries_per_s", 1.0),
        ("p99 ms at max rate", "max", "latency_p99_us", 0.001),
        ("deliveries/s at a fixed 1 M/s", "1m", "deliveries_per_s", 1.0),
        ("p99 ms at a fixed 1 M/s", "1m", "latency_p99_us", 0.001),
        ("… ÷ floor-raw's p99 at 1 msg/s, same round", "1m", "floor_ratio", 1.0),
        ("p99 ms, 1 msg/s (light load)", "light", "latency_p99_us", 0.001),
        ("RSS KiB per idle session", "idle", "rss_per_idle_session_kib", 1.0),
        ("session connects/s", "idle", "connects_per_s", 1.0),
        ("targeted p99 ms, N = 1,000", "t1k", "latency_p99_us", 0.001),
        ("targeted p99 ms, N = 19,500", "t19k", "latency_p99_us", 0.001),
        ("targeted 200 msg/s, N = 10,000: p90 ms", "t200", "latency_p90_us", 0.001),
        ("… ÷ floor-raw's, same round", "t200", "vs_floor:latency_p90_us", 1.0),
        ("targeted 200 msg/s, N = 10,000: p99 ms", "t200", "latency_p99_us", 0.001),
        ("targeted 200 msg/s, N = 10,000: server CPU %", "t200", "server_cpu_percent", 1.0),
        ("… ÷ floor-raw's, same round", "t200", "vs_floor:server_cpu_percent", 1.0),
        ("targeted 20,000 msg/s, N = 10,000: p90 ms", "t20k", "latency_p90_us", 0.001),
        ("… ÷ floor-raw's, same round", "t20k", "vs_floor:latency_p90_us", 1.0),
        ("targeted 20,000 msg/s, N = 10,000: p99 ms", "t20k", "latency_p99_us", 0.001),
        ("targeted 20,000 msg/s, N = 10,000: server CPU %", "t20k", "server_cpu_percent", 1.0),
        ("… ÷ floor-raw's, same round", "t20k", "vs_floor:server_cpu_percent", 1.0),
        ("lost+dup+reordered (max)", "max", "faults", 1.0),
        ("lost+dup+reordered (1 M/s)", "1m", "faults", 1.0),
        ("lost+dup+reordered (targeted)", "t19k", "faults", 1.0),
        ("channel: max deliveries/s", "cmax", "deliveries_per_s", 1.0),
        ("… ÷ notify_all's, same round", "cmax", "channel_ratio", 1.0),
        ("channel: p99 ms at max rate", "cmax", "latency_p99_us", 0.001),
        ("… ÷ notify_all's, same round", "cmax", "channel_ratio_p99", 1.0),
        ("channel: deliveries/s at a fixed 1 M/s", "c1m", "deliveries_per_s", 1.0),
        ("channel: p99 ms at a fixed 1 M/s", "c1m", "latency_p99_us", 0.001),
        ("… ÷ notify_all's, same round", "c1m", "channel_ratio_p99", 1.0),
        ("channel: p99 ms, 1 msg/s", "clight", "latency_p99_us", 0.001),
        ("… ÷ notify_all's, same round", "clight", "channel_ratio_p99", 1.0),
        ("padded notify_all: max deliveries/s", "pmax", "deliveries_per_s", 1.0),
        ("channel max deliveries/s ÷ padded notify_all's, same round", "pmax", "padded_ratio",
         1.0),
        ("padded notify_all: p99 ms at a fixed 1 M/s", "p1m", "latency_p99_us", 0.001),
        ("channel p99 at 1 M/s ÷ padded notify_all's, same round", "p1m", "padded_ratio_p99",
         1.0),
        ("lost+dup+reordered (channel, max and 1 M/s)", "cmax,c1m", "faults", 1.0),
        ("presence: max deliveries/s", "prmax", "deliveries_per_s", 1.0),
        ("… ÷ without presence, same round", "prmax", "presence_ratio", 1.0),
        ("presence: p99 ms at max rate", "prmax", "latency_p99_us", 0.001),
        ("… ÷ without presence, same round", "prmax", "presence_ratio_p99", 1.0),
        ("presence: server CPU % at max rate", "prmax", "server_cpu_percent", 1.0),
        ("presence: deliveries/s at a fixed 1 M/s", "pr1m", "deliveries_per_s", 1.0),
        ("presence: p50 ms at a fixed 1 M/s", "pr1m", "latency_p50_us", 0.001),
        ("… ÷ without presence, same round", "pr1m", "presence_ratio_p50", 1.0),
        ("presence: p99 ms at a fixed 1 M/s", "pr1m", "latency_p99_us", 0.001),
        ("… ÷ without presence, same round", "pr1m", "presence_ratio_p99", 1.0),
        ("presence: server CPU % at a fixed 1 M/s", "pr1m", "server_cpu_percent", 1.0),
        ("… ÷ without presence, same round", "pr1m", "presence_ratio_cpu", 1.0),
        ("presence: p99 ms, 1 msg/s", "prlight", "latency_p99_us", 0.001),
        ("… ÷ without presence, same round", "prlight", "presence_ratio_p99", 1.0),
        ("lost+dup+reordered (presence)", "prmax,pr1m,prlight", "faults", 1.0),
    ]
    present = {r["scenario"] for r in results}
    # Rows of scenarios no run has are left out (the channel rows of runs before channels).
    rows = [row for row in rows if any(s in present for s in row[1].split(","))]
    head = "| figure | " + " | ".join(names) + " |"
    lines = [head, "|---|" + "---|" * len(names)]
    for label, scen, key, scale in rows:
        cells = []
        for n in names:
            if key == "faults":
                vs = [figure(results, n, sc, key, max) for sc in scen.split(",")]
                vs = [v for v in vs if v is not None]
                v = max(vs) if vs else None
            elif key in ("channel_ratio", "channel_ratio_p99"):
                k = "deliveries_per_s" if key == "channel_ratio" else "latency_p99_us"
                v = round_ratio(results, (n, scen), (n, CHANNEL_SCENARIOS[scen]), k)
            elif key.startswith("presence_ratio"):
                k = {"presence_ratio": "deliveries_per_s", "presence_ratio_p50": "latency_p50_us",
                     "presence_ratio_p99": "latency_p99_us",
                     "presence_ratio_cpu": "server_cpu_percent"}[key]
                v = round_ratio(results, (n, scen), (n, PRESENCE_SCENARIOS[scen]), k)
            elif key in ("padded_ratio", "padded_ratio_p99"):
                k = "deliveries_per_s" if key == "padded_ratio" else "latency_p99_us"
                channel = {"pmax": "cmax", "p1m": "c1m"}[scen]
                v = round_ratio(results, (n, channel), (n, scen), k)
            elif key == "floor_ratio":
                v = floor_ratio(results, n)
            elif key.startswith("vs_floor:"):
                # The same figure of floor-raw in the same round (named floor-raw in the run).
                v = round_ratio(results, (n, scen), ("floor-raw", scen), key.split(":")[1])
            else:
                v = figure(results, n, scen, key)
                v = None if v is None else v * scale
            cells.append(fmt_num(v))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    p50, p99 = (figure(results, "loopback", "rtt", k) for k in ("latency_p50_us",
                                                                 "latency_p99_us"))
    if p99 is not None:
        lines.append("")
        lines.append(f"The machine alone (`rtt`, a TCP echo pinned as the servers are, "
                     f"1,000 round trips/s): p50 {p50 / 1000:.2f} ms, p99 {p99 / 1000:.2f} ms.")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("servers", nargs="*", help="NAME:FORMAT=COMMAND with {port} and {bus}")
    p.add_argument("--scenarios", default="max+cmax,1m+c1m,light+clight,idle,t1k,t19k",
                   help="comma-separated; scenarios joined with + run in turn in each round")
    p.add_argument("--no-targeted", default="",
                   help="servers (comma-separated) without users: they skip t1k, t19k, t200, t20k")
    p.add_argument("--no-channels", default="",
                   help="servers (comma-separated) without channels: they skip cmax, c1m, clight")
    p.add_argument("--no-presence", default="",
                   help="servers (comma-separated) without presence channels: they skip prmax, "
                        "pr1m, prlight")
    p.add_argument("--table", metavar="JSONL", help="only print the table of a results file")
    p.add_argument("--sessions", type=int, default=10_000)
    p.add_argument("--idle-sessions", type=int, default=19_500)
    p.add_argument("--duration", type=int, default=10)
    p.add_argument("--repeat", type=int, default=1,
                   help="rounds of each scenario, servers interleaved, their order turned by one "
                        "each round; the table gives medians")
    p.add_argument("--server-cpu", default="0")
    p.add_argument("--load-cpu", default="1")
    p.add_argument("--port", type=int, default=18600)
    p.add_argument("--bench", default=BENCH)
    p.add_argument("--out", default="bench-results.jsonl")
    a = p.parse_args()
    if a.table:
        print(table([json.loads(l) for l in open(a.table) if l.strip()]))
        return
    servers = []
    for s in a.servers:
        head, _, command = s.partition("=")
        name, _, fmt = head.partition(":")
        if not command or fmt not in ("pushnote", "original", "redis"):
            raise SystemExit(f"expected NAME:FORMAT=COMMAND, FORMAT pushnote, original or redis: {s}")
        servers.append((name, fmt, command))
    results = []
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    rounds = max(a.repeat, 1)

    def record(r, k):
        r["run"] = stamp
        r["round"] = k
        results.append(r)
        with open(a.out, "a") as f:
            f.write(json.dumps(r) + "\n")

    def skips(server, scenario):
        name, fmt, _ = server
        if scenario in ("t1k", "t19k", "t200", "t20k"):
            return name in a.no_targeted.split(",")
        if scenario in CHANNEL_SCENARIOS or scenario in PADDED_SCENARIOS:
            return fmt not in ("pushnote", "redis") or name in a.no_channels.split(",")
        if scenario in PRESENCE_SCENARIOS:
            return (fmt not in ("pushnote", "redis") or name in a.no_channels.split(",")
                    or name in a.no_presence.split(","))
        return False

    # Each run of a server gets ports of its own (the last one's may linger in TIME_WAIT).
    slot = 0
    for group in a.scenarios.split(","):
        for k in range(rounds):
            for scenario in group.split("+"):
                slot += 1
                if scenario == "rtt":
                    record(run_rtt(a, a.port + 10 * slot), k)
                    continue
                # The servers' order turns by one each round: whichever runs first in a round
                # can take more CPU than the same build run second, so no server always is.
                turn = k % len(servers) if servers else 0
                order = list(enumerate(servers))
                for j, server in order[turn:] + order[:turn]:
                    if skips(server, scenario):
                        continue
                    port = a.port + 10 * slot + j
                    scheme = "redis" if server[1] == "redis" else "tcp"
                    bus = f"{scheme}://127.0.0.1:{port + 1000}"
                    record(run_one(server, scenario, a, port, bus), k)
    print(table(results))


if __name__ == "__main__":
    main()
