"""Load test of `segformer serve` on 127.0.0.1 (issue 17): throughput, latency percentiles, errors and the
server's RSS at several client concurrencies, with dynamic batching on and off, against the offline
throughput of `segformer.inference.whole` on batches of the same images in one process.

The offline reference is measured in this process, with the servers idle, before the first level and after
every level, so that each level is compared with the mean of the two measurements around it (on a shared
machine the load moves). CPU seconds per image (the server process's user + system time over the level, the
offline loop's process time) are reported too: they depend much less on the load than images per second.

Bounded: every level runs for --duration seconds or --max-requests requests, whichever comes first, each
request times out after 120 s, and the servers it started are stopped at the end. Only 127.0.0.1 is used.

    .venv/bin/python benchmarks/serve_load.py                       # B0 (random weights), 512x512, 60 s a level
    .venv/bin/python benchmarks/serve_load.py --duration 15 --levels 1 4   # a first look
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import segformer
from segformer.preprocess import ImageProcessor
from segformer.runtime import retain_freed_memory

EXAMPLE = Path(segformer.__file__).parent / "assets" / "chelsea.jpg"
TIMEOUT = 120.0


def make_images(size: int, count: int = 8) -> list[bytes]:
    """`count` different size x size JPEGs cut from the bundled example."""
    base = Image.open(EXAMPLE).convert("RGB")
    rng, images = random.Random(0), []
    for i in range(count):
        w, h = base.size
        box = (rng.randint(0, w // 4), rng.randint(0, h // 4), rng.randint(3 * w // 4, w), rng.randint(3 * h // 4, h))
        im = base.crop(box).resize((size, size), Image.Resampling.BILINEAR)
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if i % 2 else im
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=90)
        images.append(buf.getvalue())
    return images


class Offline:
    """`segformer.inference.whole` on one batch of the preprocessed images, in this process: the reference."""

    def __init__(self, model_dir: Path, images: list[bytes], batch: int):
        self.model = segformer.load_model(model_dir).eval()
        self.x = ImageProcessor()([Image.open(io.BytesIO(b)) for b in images[:batch]])["pixel_values"]
        segformer.inference.whole(self.model, self.x)  # warm-up

    def measure(self, seconds: float) -> dict:
        """Images/s and CPU seconds per image of whole-batch passes for about `seconds` (at least two passes)."""
        done, start, cpu = 0, time.perf_counter(), time.process_time()
        while done < 2 * self.x.shape[0] or time.perf_counter() - start < seconds:
            segformer.inference.whole(self.model, self.x)
            done += self.x.shape[0]
        return {"images_per_s": done / (time.perf_counter() - start),
                "cpu_s_per_image": (time.process_time() - cpu) / done, "load": os.getloadavg()[0]}


class ServerProcess:
    def __init__(self, model_dir: Path, flags: list[str], log: Path):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        cmd = [sys.executable, "-m", "segformer.cli", "serve", "--model", str(model_dir), "--host", "127.0.0.1",
               "--port", str(self.port), "--log-level", "warning", *flags]
        self.proc = subprocess.Popen(cmd, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while request(self.port, "GET", "/readyz")[0] != 200:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.5)

    def cpu_seconds(self) -> float:
        """User + system time of the server process (all its threads) so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> int:
        self.proc.terminate()
        return self.proc.wait(60)


def request(port: int, method: str, path: str, body: bytes | None = None):
    """(status, body) or (None, error) when no answer came."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        conn.request(method, path, body=body)
        resp = conn.getresponse()
        return resp.status, resp.read()
    except (OSError, http.client.HTTPException) as exc:
        return None, repr(exc)
    finally:
        conn.close()


def vanish_mid_upload(port: int, body: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(f"POST /v1/segment HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                     + body[:len(body) // 2])


def client(port: int, images: list[bytes], stop_at: float, budget: list[int], bad_fraction: float, seed: int,
           out: list) -> None:
    """Sends requests back to back until the deadline or the shared budget runs out; records each outcome as
    (kind, status, seconds, error): kind "good" (must be 200), "garbage" (must be 400) or "vanished" (no answer
    due). One connection per request: a kept-alive connection left idle past the server's keep-alive timeout
    (while this client's previous request waited in the queue) would be closed under a new POST."""
    rng = random.Random(seed)
    while time.monotonic() < stop_at:
        with BUDGET_LOCK:
            if budget[0] <= 0:
                break
            budget[0] -= 1
        image, start = rng.choice(images), time.perf_counter()
        if rng.random() < bad_fraction:
            if rng.random() < 0.5:
                status, answer = request(port, "POST", "/v1/segment", image[: len(image) // 3][::-1])
                out.append(("garbage", status, time.perf_counter() - start, answer if status is None else None))
            else:
                vanish_mid_upload(port, image)
                out.append(("vanished", None, time.perf_counter() - start, None))
            continue
        status, answer = request(port, "POST", "/v1/segment", image)
        out.append(("good", status, time.perf_counter() - start, answer if status != 200 else None))


BUDGET_LOCK = threading.Lock()
SERVERS = ("batching", "no-batching")  # --max-batch N --max-wait-ms 10, or --max-batch 1


def batch_stats(port: int) -> tuple[float, float]:
    text = request(port, "GET", "/metrics")[1].decode()
    values = dict(line.rsplit(" ", 1) for line in text.splitlines() if line.startswith("segformer_batch_size_"))
    return float(values.get("segformer_batch_size_sum", 0)), float(values.get("segformer_batch_size_count", 0))


def run_level(server: ServerProcess, images, clients: int, duration: float, max_requests: int,
              bad_fraction: float) -> dict:
    outcomes, rss, budget = [], [], [max_requests]
    sum0, count0 = batch_stats(server.port)
    cpu0, start = server.cpu_seconds(), time.monotonic()
    stop_at = start + duration
    threads = [threading.Thread(target=client, args=(server.port, images, stop_at, budget, bad_fraction, i, outcomes))
               for i in range(clients)]
    for t in threads:
        t.start()
    load = []
    while any(t.is_alive() for t in threads):
        rss.append((time.monotonic() - start, server.rss_mib()))
        load.append(os.getloadavg()[0])
        time.sleep(0.5)
    elapsed, cpu = time.monotonic() - start, server.cpu_seconds() - cpu0
    sum1, count1 = batch_stats(server.port)
    row = summarise(outcomes, rss, elapsed, clients, (sum1 - sum0) / max(count1 - count0, 1))
    return row | {"server_cpu_s_per_image": cpu / max(row["ok"], 1), "load": [min(load), max(load)]}


def summarise(outcomes, rss, elapsed, clients, mean_batch) -> dict:
    good = [o for o in outcomes if o[0] == "good"]
    ok = np.array([seconds for _, status, seconds, _ in good if status == 200])
    garbage = [o for o in outcomes if o[0] == "garbage"]
    times, mem = np.array([t for t, _ in rss]), np.array([m for _, m in rss])
    second, last = mem[(times >= 10) & (times < 20)], mem[times >= times.max() - 10]
    percentile = lambda q: float(np.percentile(ok, q) * 1000) if ok.size else None  # noqa: E731
    return {
        "clients": clients, "seconds": round(elapsed, 1), "requests": len(outcomes), "well_formed": len(good),
        "ok": int(ok.size), "throughput": ok.size / elapsed,
        "p50_ms": percentile(50), "p95_ms": percentile(95), "p99_ms": percentile(99),
        "errors": sum(1 for o in good if o[1] is not None and o[1] != 200),
        "lost": sum(1 for o in good if o[1] is None),
        "failures": sorted({str(o[3])[:200] for o in good if o[1] != 200})[:5],
        "garbage_sent": len(garbage), "garbage_400": sum(1 for o in garbage if o[1] == 400),
        "vanished": sum(1 for o in outcomes if o[0] == "vanished"),
        "mean_batch": round(mean_batch, 2), "peak_rss_mib": float(mem.max()),
        "rss_second_10s_mib": float(second.max()) if second.size else None,
        "rss_last_10s_mib": float(last.max()) if last.size else None,
    }


def run_server(name: str, args, model_dir: Path, images: list[bytes], offline: Offline, results: dict) -> None:
    """Every level on one server, each followed by an offline measurement (its "after", the next level's
    "before"); the server is stopped with SIGTERM at the end and its exit code kept."""
    flags = ["--max-batch", str(args.max_batch if name == "batching" else 1), "--max-wait-ms", "10",
             "--runtime", args.runtime]
    server = ServerProcess(model_dir, flags, model_dir.parent / f"{name}.log")
    results["runtime"][name] = json.loads(request(server.port, "GET", "/v1/model")[1])["runtime_choice"]
    try:
        for clients in args.levels:
            row = {"server": name, **run_level(server, images, clients, args.duration, args.max_requests,
                                               args.bad_fraction)}
            before, after = results["offline"][-1], offline.measure(args.offline_seconds)
            results["offline"].append(after)
            reference = {k: (before[k] + after[k]) / 2 for k in ("images_per_s", "cpu_s_per_image")}
            row |= {"offline": reference, "vs_offline": row["throughput"] / reference["images_per_s"],
                    "cpu_vs_offline": reference["cpu_s_per_image"] / row["server_cpu_s_per_image"]}
            results["runs"].append(row)
            print(json.dumps(row), flush=True)
    finally:
        results["exit_codes"][name] = server.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=60.0, help="seconds per concurrency level (default 60)")
    p.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16], help="concurrent clients (default 1 4 16)")
    p.add_argument("--max-requests", type=int, default=20000, help="request cap per level (default 20000)")
    p.add_argument("--bad-fraction", type=float, default=0.05, help="malformed or abandoned requests (default 0.05)")
    p.add_argument("--size", type=int, default=512, help="image side (default 512)")
    p.add_argument("--max-batch", type=int, default=8, help="the batching server's --max-batch (default 8)")
    p.add_argument("--offline-seconds", type=float, default=15.0,
                   help="length of each offline measurement (before the first level and after each; default 15)")
    p.add_argument("--runtime", default="torch",
                   help="the servers' --runtime (default torch: the offline reference is PyTorch's)")
    p.add_argument("--servers", nargs="+", choices=SERVERS, default=list(SERVERS), help="which servers to run")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    retain_freed_memory()  # as the segformer command does in the server
    work = Path(tempfile.mkdtemp(prefix="serve_load_"))
    torch.manual_seed(0)
    segformer.create_model("segformer-b0", num_classes=150).save_pretrained(work / "b0")
    images = make_images(args.size)
    offline = Offline(work / "b0", images, args.max_batch)
    results = {"offline": [offline.measure(args.offline_seconds)], "runs": [], "exit_codes": {}, "runtime": {},
               "threads": torch.get_num_threads(), "cpus": os.cpu_count()}
    for name in args.servers:
        run_server(name, args, work / "b0", images, offline, results)
    print_table(results, args.max_batch)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


def print_table(results: dict, batch: int) -> None:
    print(f"\noffline segformer.inference.whole, batch {batch}, {results['threads']} torch threads: "
          + ", ".join(f"{o['images_per_s']:.2f}" for o in results["offline"]) + " images/s (in run order)")
    print("\n| server | clients | img/s | vs offline | CPU s/img (offline) | p50 ms | p95 ms | p99 ms | errors | "
          "lost | bad -> 400 | mean batch | peak RSS MiB | RSS 10-20 s / last 10 s | load |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results["runs"]:
        second, last = r["rss_second_10s_mib"], r["rss_last_10s_mib"]
        flat = f"{second:.0f} / {last:.0f} ({last / second - 1:+.0%})" if second else "n/a (run < 20 s)"
        print(f"| {r['server']} | {r['clients']} | {r['throughput']:.2f} | {r['vs_offline']:.0%} | "
              f"{r['server_cpu_s_per_image']:.2f} ({r['offline']['cpu_s_per_image']:.2f}) | "
              f"{r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {r['p99_ms']:.0f} | {r['errors']} | {r['lost']} | "
              f"{r['garbage_400']}/{r['garbage_sent']} | {r['mean_batch']} | {r['peak_rss_mib']:.0f} | {flat} | "
              f"{r['load'][0]:.0f}-{r['load'][1]:.0f} |")
    print("\n" + "\n".join(floors(results)))


def floors(results: dict) -> list[str]:
    """The issue's floors, each with its verdict."""
    runs = results["runs"]
    top = [r for r in runs if r["server"] == "batching" and r["clients"] == max(x["clients"] for x in runs)]
    flat = [r for r in runs if r["rss_second_10s_mib"]]
    verdict = lambda ok: "met" if ok else "NOT met"  # noqa: E731
    lines = [
        f"- zero errors and zero lost answers: {verdict(all(r['errors'] == r['lost'] == 0 for r in runs))}",
        f"- every well-formed request succeeded beside the bad ones: "
        f"{verdict(all(r['ok'] == r['well_formed'] for r in runs))} "
        f"({sum(r['garbage_sent'] + r['vanished'] for r in runs)} bad requests sent, "
        f"{sum(r['garbage_400'] for r in runs)}/{sum(r['garbage_sent'] for r in runs)} garbage answered 400)",
        f"- SIGTERM exit codes: {results['exit_codes']}; runtimes: {results['runtime']}",
    ]
    if top:
        r = top[0]
        lines.append(f"- batching at {r['clients']} clients >= 90% of offline: {verdict(r['vs_offline'] >= 0.9)} "
                     f"({r['vs_offline']:.0%}; CPU per image {r['cpu_vs_offline']:.2f}x as efficient)")
    if flat:
        worst = max(flat, key=lambda r: abs(r["rss_last_10s_mib"] / r["rss_second_10s_mib"] - 1))
        change = worst["rss_last_10s_mib"] / worst["rss_second_10s_mib"] - 1
        lines.append(f"- RSS flat within 10% (second vs last 10 s): {verdict(abs(change) <= 0.1)} "
                     f"(largest change {change:+.1%}: {worst['server']} at {worst['clients']} clients)")
    return lines


if __name__ == "__main__":
    sys.exit(main())
