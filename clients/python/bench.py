#!/usr/bin/env python3
# Throughput benchmark of the Python client: puts N records of SIZE bytes as fast as one
# process can and waits for every ack; one JSON line per round (optionally beside
# `shardline send --ack` on the same socket, and on an agent it starts itself).
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from shardline import Producer  # noqa: E402


def run_client(socket_path, records, size, producer_options):
    payload = b"x" * size
    with Producer(socket_path, **producer_options) as p:
        p.put(payload).result(60)  # connected before the clock starts
        acked0, failed0 = p.acknowledged_records, p.failed_records
        put = p.put
        start = time.perf_counter()
        for _ in range(records):
            put(payload)
        if not p.flush(600):
            raise SystemExit("records still unanswered after 600 s")
        seconds = time.perf_counter() - start
        failed = p.failed_records - failed0
        acked = p.acknowledged_records - acked0
    if failed or acked != records:
        raise SystemExit("%d records failed, %d of %d acked" % (failed, acked, records))
    return seconds


def run_send(shardline_bin, socket_path, records, size, workdir):
    path = os.path.join(workdir, "send-%d-%d.txt" % (records, size))
    if not os.path.exists(path):
        line = b"x" * (size - 1) + b"\n"
        with open(path, "wb") as f:
            f.write(line * records)
    start = time.perf_counter()
    out = subprocess.run(
        [shardline_bin, "send", "--socket", socket_path, "--ack", path],
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit("shardline send failed: " + out.stdout + out.stderr)
    return seconds


def spawn(workdir, shardline_bin, emulator):
    """Starts the Kinesis emulator and an agent on `workdir`; returns (socket, stop)."""
    emu = subprocess.Popen(
        [emulator, "--stream", "logs:4"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    endpoint = json.loads(emu.stdout.readline())["endpoint"]
    sock = os.path.join(workdir, "agent.sock")
    config = os.path.join(workdir, "agent.toml")
    with open(config, "w") as f:
        f.write(
            'shutdown_timeout_secs = 5\n[kinesis]\nstream = "logs"\nregion = "us-east-1"\n'
            'endpoint = "%s"\n[delivery]\nmax_buffered_time_ms = 20\n[metrics]\nlisten = "127.0.0.1:0"\n'
            '[spool]\ndir = "%s"\n[[socket]]\npath = "%s"\nframing = "frames"\n'
            % (endpoint, os.path.join(workdir, "spool"), sock)
        )
    env = dict(
        os.environ,
        AWS_ACCESS_KEY_ID="test",
        AWS_SECRET_ACCESS_KEY="test",
        AWS_EC2_METADATA_DISABLED="true",
        RUST_LOG="info",
    )
    log = open(os.path.join(workdir, "agent.log"), "wb")
    agent = subprocess.Popen([shardline_bin, "run", "--config", config], env=env, stderr=log, stdout=log)
    deadline = time.monotonic() + 60
    while not os.path.exists(sock):
        if agent.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the agent did not start; see " + log.name)
        time.sleep(0.05)

    def stop():
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(30)
        except subprocess.TimeoutExpired:
            agent.kill()
        emu.stdin.close()
        emu.wait(30)

    return sock, stop


def main():
    ap = argparse.ArgumentParser(description="Acked-records throughput of the Python client.")
    ap.add_argument("--socket", help="the agent's framed socket (or use --spawn)")
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument(
        "--send",
        metavar="SHARDLINE_BIN",
        help="also time `SHARDLINE_BIN send --socket PATH --ack FILE` each round",
    )
    ap.add_argument(
        "--spawn",
        action="store_true",
        help="start the emulator ($SHARDLINE_EMULATOR) and an agent ($SHARDLINE_BIN) on a temp dir",
    )
    ap.add_argument("--linger", type=float, default=0.01)
    ap.add_argument("--max-batch-records", type=int, default=500)
    ap.add_argument("--max-in-flight", type=int, default=16)
    args = ap.parse_args()
    workdir = tempfile.mkdtemp(prefix="shardline-bench-")
    stop = None
    try:
        socket_path = args.socket
        if args.spawn:
            shardline_bin = os.environ.get("SHARDLINE_BIN") or args.send
            emulator = os.environ.get("SHARDLINE_EMULATOR")
            if not shardline_bin or not emulator:
                raise SystemExit("--spawn needs SHARDLINE_BIN and SHARDLINE_EMULATOR")
            socket_path, stop = spawn(workdir, shardline_bin, emulator)
        if not socket_path:
            raise SystemExit("give --socket PATH or --spawn")
        options = dict(
            linger=args.linger,
            max_batch_records=args.max_batch_records,
            max_in_flight=args.max_in_flight,
        )
        for _ in range(args.rounds):
            runs = [("python", lambda: run_client(socket_path, args.records, args.size, options))]
            if args.send:
                runs.append(
                    (
                        "shardline send",
                        lambda: run_send(args.send, socket_path, args.records, args.size, workdir),
                    )
                )
            for name, run in runs:
                seconds = run()
                print(
                    json.dumps(
                        {
                            "client": name,
                            "records": args.records,
                            "seconds": round(seconds, 4),
                            "records_per_sec": round(args.records / seconds),
                        }
                    ),
                    flush=True,
                )
    finally:
        if stop is not None:
            stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
