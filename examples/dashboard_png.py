#!/usr/bin/env python3
"""Draws the Grafana dashboard's panels (packaging/grafana/shardline.json) from a
run's scraped metrics, for the README's picture when Grafana is not at hand.

Input: JSON lines of {"t": seconds, "text": Prometheus exposition}, as
examples/dashboard_run.rs writes them (one scrape a second). Each panel evaluates
the dashboard's query on those samples: rates over a 5-second window, sums by the
same labels, histogram quantiles from bucket rates.

    python3 examples/dashboard_png.py target/dashboard-scrapes.jsonl docs/dashboard.png

Needs matplotlib (Debian package python3-matplotlib).
"""

import json
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

WINDOW = 5  # seconds, the rate window
THROTTLE = {
    "ProvisionedThroughputExceededException",
    "KMSThrottlingException",
    "LimitExceededException",
    "ThrottlingException",
}
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text):
    """{(name, ((label, value), ...)): value} of one scrape."""
    out = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        if not m:
            continue
        name, labels, value = m.groups()
        try:
            v = float(value)
        except ValueError:
            continue
        out[(name, tuple(sorted(LABEL.findall(labels or ""))))] = v
    return out


def load(path):
    scrapes = []
    with open(path) as f:
        for line in f:
            s = json.loads(line)
            scrapes.append((s["t"], parse(s["text"])))
    return scrapes


def series(scrapes, name, by, where=lambda labels: True):
    """Gauge values summed by the `by` labels: {key: [(t, v)]}."""
    out = {}
    for t, samples in scrapes:
        sums = {}
        for (n, labels), v in samples.items():
            d = dict(labels)
            if n != name or not where(d):
                continue
            key = tuple(d.get(b, "") for b in by)
            sums[key] = sums.get(key, 0.0) + v
        for key, v in sums.items():
            out.setdefault(key, []).append((t, v))
    return out


def rate(points):
    """Per-second rate over WINDOW, counter resets taken as restarts from 0."""
    out = []
    for i, (t, v) in enumerate(points):
        j = i
        while j > 0 and t - points[j - 1][0] <= WINDOW + 0.5:
            j -= 1
        if j == i:
            continue
        t0, v0 = points[j]
        dv = v - v0 if v >= v0 else v
        out.append((t, dv / (t - t0)))
    return out


def rates(scrapes, name, by, where=lambda labels: True):
    """Per-series rates first (as PromQL does), then summed by the `by` labels."""
    per = {}
    for t, samples in scrapes:
        for (n, labels), v in samples.items():
            if n == name and where(dict(labels)):
                per.setdefault(labels, []).append((t, v))
    out = {}
    for labels, points in per.items():
        d = dict(labels)
        k = tuple(d.get(b, "") for b in by)
        for t, r in rate(points):
            out.setdefault(k, {}).setdefault(t, 0.0)
            out[k][t] += r
    return {k: sorted(v.items()) for k, v in out.items()}


def quantile(q, buckets):
    """histogram_quantile over [(le, rate)] sorted by le."""
    total = buckets[-1][1]
    if total <= 0:
        return None
    rank = q * total
    prev_le, prev_c = 0.0, 0.0
    for le, c in buckets:
        if c >= rank:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * ((rank - prev_c) / (c - prev_c) if c > prev_c else 0)
        prev_le, prev_c = le, c
    return prev_le


def latency(scrapes, q):
    r = rates(scrapes, "shardline_put_records_duration_seconds_bucket", ("stream", "le"))
    per_stream = {}
    for (stream, le), points in r.items():
        for t, v in points:
            per_stream.setdefault(stream, {}).setdefault(t, []).append((float(le), v))
    out = {}
    for stream, by_t in per_stream.items():
        pts = []
        for t, buckets in sorted(by_t.items()):
            v = quantile(q, sorted(buckets))
            if v is not None:
                pts.append((t, v))
        out[(stream,)] = pts
    return out


def plot(ax, title, lines, unit=""):
    ax.set_title(title, fontsize=10, loc="left")
    for label, points in lines:
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, label=label, linewidth=1.2)
    ax.set_xlabel("seconds", fontsize=8)
    if unit:
        ax.set_ylabel(unit, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    if any(p for _, p in lines):
        ax.legend(fontsize=7, loc="upper left")
    ax.set_ylim(bottom=0)


def named(d, fmt):
    return [(fmt.format(*k), v) for k, v in sorted(d.items())]


def main():
    src, dst = sys.argv[1], sys.argv[2]
    s = load(src)
    fig, axes = plt.subplots(4, 3, figsize=(16, 14))
    fig.suptitle("shardline — records, spool, Kinesis, process (scraped from a real run)", fontsize=13)
    a = iter(axes.flat)
    plot(next(a), "Records received per source", named(rates(s, "shardline_records_received_total", ("source",)), "{}"), "records/s")
    plot(next(a), "Records delivered per stream", named(rates(s, "shardline_records_delivered_total", ("stream",)), "{}"), "records/s")
    plot(
        next(a),
        "Records failed, rejected and retried",
        named(rates(s, "shardline_records_failed_total", ("stream",)), "failed {}")
        + named(rates(s, "shardline_records_rejected_total", ("source", "reason")), "rejected {} {}")
        + named(rates(s, "shardline_records_retried_total", ("stream",)), "retried {}"),
        "records/s",
    )
    mib = lambda d: {k: [(t, v / 2**20) for t, v in p] for k, p in d.items()}  # noqa: E731
    plot(
        next(a),
        "Spool bytes",
        named(mib(series(s, "shardline_spool_bytes", ())), "records")
        + named(mib(series(s, "shardline_spool_segment_bytes", ())), "segments"),
        "MiB",
    )
    plot(next(a), "Oldest spooled record", named(series(s, "shardline_spool_oldest_record_age_seconds", ()), "age"), "s")
    plot(next(a), "Spool records", named(series(s, "shardline_spool_records", ()), "records"), "records")
    ms = lambda d: {k: [(t, v * 1000) for t, v in p] for k, p in d.items()}  # noqa: E731
    plot(
        next(a),
        "PutRecords latency",
        named(ms(latency(s, 0.5)), "p50 {}") + named(ms(latency(s, 0.99)), "p99 {}"),
        "ms",
    )
    throttled = lambda d: d.get("code") in THROTTLE  # noqa: E731
    plot(
        next(a),
        "Throttles per stream",
        named(rates(s, "shardline_put_records_entry_errors_total", ("stream",), throttled), "entries {}")
        + named(rates(s, "shardline_put_records_errors_total", ("stream",), throttled), "requests {}"),
        "per s",
    )
    plot(
        next(a),
        "PutRecords requests and errors",
        named(rates(s, "shardline_put_records_requests_total", ("stream",)), "requests {}")
        + named(rates(s, "shardline_put_records_errors_total", ("stream", "code")), "{1} {0}"),
        "requests/s",
    )
    ax = next(a)
    plot(
        ax,
        "Shard map refreshes and changes; misrouted re-sends (right)",
        named(series(s, "shardline_shard_map_refreshes_total", ("stream",)), "refreshes {}")
        + named(series(s, "shardline_shard_map_changes_total", ("stream",)), "changes {}"),
        "total",
    )
    right = ax.twinx()
    for label, points in named(series(s, "shardline_records_misrouted_total", ("stream",)), "misrouted {}"):
        xs, ys = zip(*points)
        right.plot(xs, ys, label=label, linewidth=1.2, color="tab:red")
    right.set_ylabel("records re-sent", fontsize=8)
    right.tick_params(labelsize=7)
    right.set_ylim(bottom=0)
    right.legend(fontsize=7, loc="lower right")
    plot(next(a), "CPU", named(rates(s, "process_cpu_seconds_total", ()), "cores"), "cores")
    plot(
        next(a),
        "Memory",
        named(mib(series(s, "process_resident_memory_bytes", ())), "resident")
        + named(mib(series(s, "shardline_ingest_memory_bytes", ())), "ingest budget used"),
        "MiB",
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(dst, dpi=80)
    print(f"wrote {dst}")


if __name__ == "__main__":
    main()
