#!/usr/bin/env python3
"""Writes REPORT_DIR/report.md and its charts from the raw results scripts/bench collected.

    python3 scripts/bench-report.py REPORT_DIR

Reads REPORT_DIR/raw/: machine.tsv, sections.tsv, crypto/ (bench-crypto --out), storage/
(bench-storage --out), hsm/hsm.json (bench-hsm), daemon/ (bench-daemon --out). Each figure is
put beside its anchor from the same run, with the ratio and issue 18's target where there is
one; a figure whose section did not run or failed is reported as missing, never estimated.
Charts are SVG drawn by gnuplot into REPORT_DIR/charts/.
"""

import glob
import json
import os
import subprocess
import sys

REPORT = sys.argv[1]
RAW = os.path.join(REPORT, "raw")
CHARTS = os.path.join(REPORT, "charts")


def read_tsv(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [line.rstrip("\n").split("\t") for line in f if line.strip()]


def benchmarks(pattern):
    """Google Benchmark results of every file matching `pattern`: name -> best of the rounds."""
    best = {}
    for path in sorted(glob.glob(os.path.join(RAW, pattern))):
        with open(path) as f:
            for b in json.load(f).get("benchmarks", []):
                if b.get("error_occurred"):
                    continue
                old = best.get(b["name"])
                if old is None or b.get("bytes_per_second", 0) > old.get("bytes_per_second", 0):
                    best[b["name"]] = b
    return best


machine = dict((row[0], row[1]) for row in read_tsv(os.path.join(RAW, "machine.tsv")))
sections = {row[0]: row for row in read_tsv(os.path.join(RAW, "sections.tsv"))}
quick = machine.get("mode") == "quick"

out = []
targets = []  # (figure, coffer, anchor, ratio, target, verdict, section)


def load(section):
    row = sections.get(section)
    return f"load {row[3].split()[0]} → {row[4].split()[0]}" if row else ""


def verdict(ratio, target, at_least=True):
    if ratio is None:
        return "not measured"
    met = ratio >= target if at_least else ratio <= target
    return "**met**" if met else "**not met**"


def gbs(rate):
    return f"{rate / 1e9:.2f} GB/s"


def kops(rate):
    return f"{rate / 1e3:.1f} k/s"


def add_target(figure, coffer, anchor, ratio, target, met, section):
    targets.append((figure, coffer, anchor, "—" if ratio is None else f"{ratio:.2f}x", target, met,
                    load(section)))


def section_note(name):
    row = sections.get(name)
    if row is None:
        return f"_Section {name} did not run ({'not part of --quick' if quick else 'skipped'})._"
    status = "" if row[1] == "ok" else f" **FAILED** (log: logs/{name}.log)"
    return (f"_Section {name}: {row[2]} s, load average (1/5/15 min) {row[3]} at start, {row[4]} "
            f"at end{status}._")


# --- AEAD ------------------------------------------------------------------------------------
crypto = benchmarks("crypto/coffer.*.json")
openssl = {}
for mode, size, rate in read_tsv(os.path.join(RAW, "crypto", "openssl.tsv")):
    key = (mode, int(size))
    openssl[key] = max(openssl.get(key, 0), float(rate))
crypto_rows = []
sizes = sorted({size for _, size in openssl})
for size in sizes:
    seal = crypto.get(f"BM_RecordSeal/{size}", {}).get("bytes_per_second")
    opened = crypto.get(f"BM_RecordOpen/{size}", {}).get("bytes_per_second")
    evp, aead, dec = (openssl.get((m, size)) for m in ("evp", "aead", "decrypt"))
    crypto_rows.append((size, seal, opened, evp, aead, dec))
stream = crypto.get("BM_StreamDecrypt256MiB", {}).get("bytes_per_second")
stream_anchor = openssl.get(("decrypt", 1048576))
if stream and stream_anchor:
    add_target("stream decrypt 256 MiB vs `openssl speed -evp aes-256-gcm -decrypt` at 1 MiB",
               gbs(stream), gbs(stream_anchor), stream / stream_anchor, "≥ 0.90x",
               verdict(stream / stream_anchor, 0.9), "crypto")
else:
    add_target("stream decrypt 256 MiB vs openssl -decrypt at 1 MiB", "—", "—", None, "≥ 0.90x",
               "not run (--quick)" if quick else "not measured: section failed", "crypto")

# --- Storage, in process ---------------------------------------------------------------------
storage = benchmarks("storage/storage.json")
storage_rows = []
for label, size in (("1KiB", 1024), ("16KiB", 16384)):
    for op, target in (("Put", 0.85), ("Get", 0.90)):
        enc = storage.get(f"BM_Encrypted{op}_{label}/durability:wal/real_time")
        plain = storage.get(f"BM_Plain{op}_{label}/durability:wal/real_time")
        if not enc or not plain:
            if not (quick and label == "16KiB"):
                add_target(f"in-process {op.lower()} {label} vs plain RocksDB", "—", "—", None,
                           f"≥ {target:.2f}x", "not measured: section failed", "storage")
            continue
        e, p = enc["items_per_second"], plain["items_per_second"]
        storage_rows.append((size, op.lower(), e, p, enc["bytes_per_second"],
                             plain["bytes_per_second"]))
        add_target(f"in-process {op.lower()} {label} (wal) vs plain RocksDB, same options",
                   kops(e), kops(p), e / p, f"≥ {target:.2f}x", verdict(e / p, target), "storage")
attachments = [(name, b) for name, b in storage.items() if name.startswith("BM_Attachment")]
reencryption = [(name, b) for name, b in storage.items() if name.startswith("BM_Reencryption")]

# --- HSM -------------------------------------------------------------------------------------
hsm = benchmarks("hsm/hsm.json")
startup_rows = []
for keys in (100, 1000, 10000):
    ours = hsm.get(f"BM_Startup/{keys}/iterations:5")
    token = hsm.get(f"BM_TokenLoginFind/{keys}/iterations:5")
    if ours and token:
        startup_rows.append((keys, ours["real_time"], token["real_time"],
                             ours.get("keys_mapped"), token.get("objects_found")))
if any(row[0] == 10000 for row in startup_rows):
    _, ours_ms, token_ms, _, _ = next(r for r in startup_rows if r[0] == 10000)
    add_target("HSM start-up with 10,000 dataset keys vs the token's own login + find",
               f"{ours_ms:.0f} ms", f"{token_ms:.0f} ms", ours_ms / token_ms, "≤ 1.5x",
               verdict(ours_ms / token_ms, 1.5, at_least=False), "hsm")
else:
    add_target("HSM start-up with 10,000 dataset keys vs the token's own login + find", "—", "—",
               None, "≤ 1.5x", "not run (--quick)" if quick else "not measured: section failed",
               "hsm")

# --- Socket ----------------------------------------------------------------------------------
daemon = [r for r in read_tsv(os.path.join(RAW, "daemon", "results.tsv"))]


def socket(system, mode, op, clients):
    for r in daemon:
        if r[0] == system and r[1] == mode and r[2] == op and r[3] == str(clients):
            return {"ops": float(r[4]), "p50": float(r[5]), "p99": float(r[6]),
                    "p999": float(r[7])}
    return None


COFFER, PG, REDIS = "wal/audit100ms", "sync_commit_off", "aof_everysec"
for op, redis_target in (("get", 0.6), ("put", 0.5)):
    c = socket("coffer", COFFER, op, 8)
    r = socket("redis", REDIS, op, 8)
    p = socket("pg+pgp_sym_encrypt", PG, op, 8)
    for name, other, target in (("Redis appendfsync everysec", r, redis_target),
                                ("PostgreSQL 15 + pgp_sym_encrypt, synchronous_commit off", p,
                                 10.0)):
        if c and other:
            add_target(f"socket {op}, 8 clients, coffer wal (window 100 ms) vs {name}",
                       kops(c["ops"]), kops(other["ops"]), c["ops"] / other["ops"],
                       f"≥ {target:g}x", verdict(c["ops"] / other["ops"], target), "daemon")
        else:
            add_target(f"socket {op}, 8 clients, vs {name}", "—", "—", None, f"≥ {target:g}x",
                       "not measured: section failed", "daemon")
    if c:
        targets.append((f"socket {op} p99, 8 clients, coffer wal, audit window 100 ms",
                        f"{c['p99'] / 1000:.2f} ms", "—", "—", "< 1 ms",
                        "**met**" if c["p99"] < 1000 else "**not met**", load("daemon")))
# The reactor path against the same binary with every request on the workers
# (limits.workers_only), both in this run, at window 100 ms and at window 0 (the default, where
# reactor requests park until their audit entry is durable). No target: it says what the
# reactor path brings.
for mode, label in ((COFFER, "window 100 ms"), ("wal/audit0ms", "window 0, the default")):
    for op in ("put", "get"):
        c = socket("coffer", mode, op, 8)
        pool = socket("coffer", mode + "/workers-only", op, 8)
        if c and pool:
            add_target(f"socket {op}, 8 clients, coffer wal ({label}), short requests on the "
                       "reactor vs every request on the workers (limits.workers_only)",
                       kops(c["ops"]), kops(pool["ops"]), c["ops"] / pool["ops"], "—",
                       "no target", "daemon")
# Batches of 16 records per request (record_get_many / record_put_many; Redis MGET / MSET;
# PostgreSQL one statement of 16 rows), in records per second. Issue 18 sets no target for them.
for op in ("mget", "mput"):
    c = socket("coffer", COFFER, op, 8)
    for name, other in ((f"its own single {op[1:]}s", socket("coffer", COFFER, op[1:], 8)),
                        ("Redis appendfsync everysec, " + {"mget": "MGET", "mput": "MSET"}[op],
                         socket("redis", REDIS, op, 8)),
                        ("PostgreSQL 15 + pgp_sym_encrypt, one statement, synchronous_commit off",
                         socket("pg+pgp_sym_encrypt", PG, op, 8))):
        if c and other:
            add_target(f"socket {op} (16 records per request, records/s), 8 clients, coffer wal "
                       f"(window 100 ms) vs {name}", kops(c["ops"]), kops(other["ops"]),
                       c["ops"] / other["ops"], "—", "no target", "daemon")
fsync = read_tsv(os.path.join(RAW, "daemon", "fsync.tsv"))
fsync_rate = float(fsync[0][1]) if fsync else None
batch = dict((r[0], r[1]) for r in read_tsv(os.path.join(RAW, "daemon", "fsync-batch.tsv")))
per_fsync = (int(batch["requests"]) / int(batch["fsyncs"])
             if batch.get("fsyncs", "0") != "0" else None)
for op in ("put", "get"):
    figure = (f"socket {op}, 64 clients, coffer wal, audit window 0 vs requests per fsync x disk "
              "fsync/s")
    rate = float(batch.get(f"{op}_ops_per_s") or 0)
    if rate and per_fsync and fsync_rate:
        bound = per_fsync * fsync_rate
        add_target(figure, kops(rate), f"{kops(bound)} ({per_fsync:.1f} x {fsync_rate:.0f}/s)",
                   rate / bound, "≥ 0.80x", verdict(rate / bound, 0.8), "daemon")
    else:
        add_target(figure, "—", "—", None, "≥ 0.80x",
                   "not run (--quick)" if quick else
                   "not measured: no fsync count (see logs/daemon.log)", "daemon")
hsm_calls = read_tsv(os.path.join(RAW, "daemon", "hsm-calls.tsv"))


# --- Charts ----------------------------------------------------------------------------------
def write_series(name, points):
    path = os.path.join(CHARTS, name + ".dat")
    with open(path, "w") as f:
        for x, y in points:
            f.write(f"{x} {y}\n")
    return path


def plot(chart, title, xlabel, ylabel, series, xtics, xrange=None):
    """series: (title, points, anchor?); anchors are dashed. Draws chart.svg (log-log), or
    returns None when there is nothing to draw."""
    series = [s for s in series if s[1]]
    if not series:
        return None
    plots = []
    for i, (title_, points, anchor) in enumerate(series):
        path = write_series(f"{chart}-{i}", sorted(points))
        plots.append(f"'{os.path.basename(path)}' using 1:2 with linespoints lw 2 pt 7 "
                     f"{'dt 2 ' if anchor else ''}title '{title_}'")
    script = "\n".join([
        'set terminal svg size 900,520 dynamic font "sans,12"',
        f"set output '{chart}.svg'",
        f"set title '{title}'",
        f"set xlabel '{xlabel}'",
        f"set ylabel '{ylabel}'",
        "set logscale y", "set grid", "set key below", "set logscale x 2",
        f"set xtics ({xtics})",
        f"set xrange [{xrange}]" if xrange else "",
        "plot " + ", \\\n  ".join(plots),
    ])
    subprocess.run(["gnuplot"], input=script, text=True, cwd=CHARTS, check=True)
    return f"charts/{chart}.svg"


def by_clients(system, mode, op):
    return [(int(r[3]), float(r[4])) for r in daemon
            if r[0] == system and r[1] == mode and r[2] == op]


charts = []
for op in ("put", "get"):
    chart = plot(f"clients-{op}", f"socket {op}, 1 KiB values, ops/s by client count, peers "
                 f"dashed (load {load('daemon')[5:]})", "clients", "ops/s",
                 [("coffer wal, audit window 100 ms", by_clients("coffer", COFFER, op), False),
                  ("coffer wal, audit window 0", by_clients("coffer", "wal/audit0ms", op), False),
                  ("PostgreSQL + pgp\\_sym\\_encrypt, sync commit off",
                   by_clients("pg+pgp_sym_encrypt", PG, op), True),
                  ("Redis appendfsync everysec", by_clients("redis", REDIS, op), True)],
                 xtics="1, 8, 64", xrange="0.7:90")
    if chart:
        charts.append(chart)
size_series = [
    ("coffer record Seal", [(r[0], r[1] / 1e6) for r in crypto_rows if r[1]], False),
    ("openssl -evp (encrypt)", [(r[0], r[3] / 1e6) for r in crypto_rows if r[3]], True),
    ("coffer record Open", [(r[0], r[2] / 1e6) for r in crypto_rows if r[2]], False),
    ("openssl -evp -decrypt", [(r[0], r[5] / 1e6) for r in crypto_rows if r[5]], True),
    ("coffer put (wal)", [(r[0], r[4] / 1e6) for r in storage_rows if r[1] == "put"], False),
    ("plain RocksDB put", [(r[0], r[5] / 1e6) for r in storage_rows if r[1] == "put"], True),
    ("coffer get", [(r[0], r[4] / 1e6) for r in storage_rows if r[1] == "get"], False),
    ("plain RocksDB get", [(r[0], r[5] / 1e6) for r in storage_rows if r[1] == "get"], True),
]
chart = plot("value-size", "throughput by value size (MB/s), in process; anchors dashed",
             "value size", "MB/s", size_series,
             xtics='"64 B" 64, "1 KiB" 1024, "16 KiB" 16384, "64 KiB" 65536, "1 MiB" 1048576',
             xrange="40:1.6e6")
if chart:
    charts.append(chart)

# --- The report ------------------------------------------------------------------------------
out.append(f"# coffer benchmark report ({'scripts/bench --quick' if quick else 'scripts/bench'})")
out.append("")
out.append(f"{machine.get('date', '')}; coffer {machine.get('coffer', '?')}. Every ratio is "
           "coffer over its anchor measured in the same run on the same machine; the load "
           "average (1 min) at the start and end of the section stands beside each, since the "
           "machine may be shared. Generated by scripts/bench; raw results in raw/, logs in "
           "logs/.")
out.append("")
out.append("## Machine and versions")
out.append("")
out.append("| | |")
out.append("| --- | --- |")
for key in ("cpu", "cores", "memory", "kernel", "coffer", "OpenSSL", "librocksdb-dev",
            "softhsm2", "PostgreSQL", "Redis", "libbenchmark-dev", "gnuplot-nox",
            "build seconds", "run seconds"):
    if key in machine:
        out.append(f"| {key} | {machine[key]} |")
out.append("")
out.append("| section | status | seconds | load average at start | at end |")
out.append("| --- | --- | --- | --- | --- |")
for row in sections.values():
    out.append(f"| {row[0]} | {row[1]} | {row[2]} | {row[3]} | {row[4]} |")
out.append("")
out.append("## Targets (issue 18)")
out.append("")
out.append("| figure | coffer | anchor | ratio | target | result | load |")
out.append("| --- | --- | --- | --- | --- | --- | --- |")
for row in targets:
    out.append("| " + " | ".join(row) + " |")
out.append("")

out.append("## AEAD by size (in memory, no durability)")
out.append("")
out.append(section_note("crypto"))
out.append("")
out.append("Best of the rounds on each side. `openssl -evp` encrypts one long message (no "
           "per-message set-up or tag); `-aead` sets up, adds AAD and a tag per message, like a "
           "record Seal; `-decrypt` is the anchor for Open.")
out.append("")
out.append("| size | Seal | openssl -evp | ratio | openssl -aead | ratio | Open | openssl -decrypt "
           "| ratio |")
out.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")


def ratio(a, b):
    return f"{a / b:.2f}x" if a and b else "—"


for size, seal, opened, evp, aead, dec in crypto_rows:
    out.append(f"| {size} | {gbs(seal) if seal else '—'} | {gbs(evp) if evp else '—'} | "
               f"{ratio(seal, evp)} | {gbs(aead) if aead else '—'} | {ratio(seal, aead)} | "
               f"{gbs(opened) if opened else '—'} | {gbs(dec) if dec else '—'} | "
               f"{ratio(opened, dec)} |")
for name in ("BM_StreamEncrypt256MiB", "BM_StreamDecrypt256MiB"):
    if name in crypto:
        out.append("")
        out.append(f"{name}: {gbs(crypto[name]['bytes_per_second'])}")
out.append("")

out.append("## Records in process: encrypted vs plain RocksDB (durability wal)")
out.append("")
out.append(section_note("storage"))
out.append("")
out.append("| value | op | coffer | plain RocksDB | ratio |")
out.append("| --- | --- | --- | --- | --- |")
for size, op, e, p, _, _ in storage_rows:
    out.append(f"| {size} B | {op} | {kops(e)} | {kops(p)} | {e / p:.2f}x |")
out.append("")
if attachments or reencryption:
    out.append("| figure | value |")
    out.append("| --- | --- |")
    for name, b in attachments:
        out.append(f"| {name} | {b['bytes_per_second'] / 2**20:.0f} MiB/s, peak RSS "
                   f"{b.get('peak_rss_MiB', 0):.0f} MiB |")
    for name, b in reencryption:
        line = (f"| {name} over {b.get('records', 0):.0f} records | "
                f"{b['items_per_second'] / 1e3:.1f} k records/s")
        if "foreground_p99_us" in b:
            line += (f"; foreground get p99 {b['foreground_p99_us']:.0f} µs during it "
                     f"({b.get('foreground_gets', 0):.0f} gets), {b['baseline_p99_us']:.0f} µs "
                     "just before")
        out.append(line + " |")
    out.append("")

out.append("## Over the socket: coffer vs PostgreSQL 15 + pgcrypto and Redis (Unix sockets)")
out.append("")
out.append(section_note("daemon"))
out.append("")
out.append("1 KiB values, random ids; mput and mget are batches of 16 records per request "
           "(their ops/s count records, their latencies are per request). Same durability in "
           "each pair: coffer wal ↔ PostgreSQL "
           "synchronous_commit off ↔ Redis appendfsync everysec (acknowledged before fsync); "
           "coffer sync ↔ synchronous_commit on. Redis's p999 is the first step of its "
           "percentile distribution at or above 99.9%.")
out.append("")
out.append("| system | mode | op | clients | ops/s | p50 | p99 | p999 |")
out.append("| --- | --- | --- | --- | --- | --- | --- | --- |")
for r in daemon:
    out.append(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {float(r[4]):.0f} | "
               f"{float(r[5]) / 1000:.2f} ms | {float(r[6]) / 1000:.2f} ms | "
               f"{float(r[7]) / 1000:.2f} ms |")
out.append("")
if fsync_rate:
    out.append(f"Disk: {fsync_rate:.0f} fdatasync/s (4 KiB appends, one thread, same file "
               "system as the state directories).")
    out.append("")
if per_fsync:
    out.append(f"Window 0, 64 clients, under strace (stopping cofferd at fsync and fdatasync "
               f"only): {batch['requests']} requests, {batch['fsyncs']} fsync/fdatasync calls "
               f"(every file: the audit log's batches and RocksDB's), {per_fsync:.1f} requests "
               f"per call; put {float(batch['put_ops_per_s']):.0f}/s, get "
               f"{float(batch['get_ops_per_s']):.0f}/s in that run.")
    out.append("")

out.append("## HSM (SoftHSM2)")
out.append("")
out.append(section_note("hsm"))
out.append("")
if startup_rows:
    out.append("| dataset keys | HsmClient::Open | token: load + login + find | ratio | "
               "keys mapped | objects found |")
    out.append("| --- | --- | --- | --- | --- | --- |")
    for keys, ours_ms, token_ms, mapped, found in startup_rows:
        out.append(f"| {keys} | {ours_ms:.0f} ms | {token_ms:.0f} ms | "
                   f"{ours_ms / token_ms:.2f}x | {mapped or 0:.0f} | {found or 0:.0f} |")
    out.append("")
for name, b in hsm.items():
    if "ops/s" in b:
        out.append(f"- {name}: {b['ops/s']:.0f} ops/s")
if hsm_calls:
    total = next((r for r in hsm_calls if r[0] == "total"), None)
    if total and int(total[3]) > 0:
        out.append("")
        out.append(f"PKCS#11 calls per request at steady state (cofferd wal, window 100 ms, "
                   f"8 clients, put + get, through OpenSC's pkcs11-spy): "
                   f"{int(total[2]) / int(total[3]):.4f} ({total[2]} calls for {total[3]} "
                   "requests)")
        for r in hsm_calls:
            if r[0] == "call":
                out.append(f"- {r[1]}: {r[2]}")
out.append("")

out.append("## Charts")
out.append("")
for chart in charts:
    out.append(f"![{chart}]({chart})")
    out.append("")

out.append("## Not measured")
out.append("")
not_measured = [
    "socket **batch** operations: cofferd has no batch request yet (kms/api), so there is "
    "nothing to drive.",
    "**rotation latency on a dataset of 1M records**: no benchmark rotates through cofferd (HSM, "
    "key DB) on a loaded dataset yet. The re-encryption figures (rate, and the foreground get "
    "p99 during it) are in process, after a rotation by storage/testing's fake key provider.",
    "cofferd's **full start-up with 10,000 datasets**: the start-up figure is the HSM client's "
    "open (module load, login, wrapping-key map) with 10,000 dataset wrapping keys in the "
    "token; creating 10,000 datasets through the daemon is not scripted.",
    "**clients per fsync batch** as cofferd sees it: it does not report its audit batch sizes; "
    "the window-0 target uses requests per fsync/fdatasync call counted with strace instead, "
    "every file's calls together (so RocksDB's few syncs lower it slightly).",
]
if quick:
    not_measured.append("in --quick: 1 and 64 clients, coffer sync, "
                        "PostgreSQL encrypt() and synchronous_commit on, Redis without "
                        "persistence, 16 KiB values, attachments, re-encryption, HSM, AEAD "
                        "sizes other than 64 KiB and the 256 MiB stream.")
for line in not_measured:
    out.append(f"- {line}")
out.append("")

with open(os.path.join(REPORT, "report.md"), "w") as f:
    f.write("\n".join(out))
