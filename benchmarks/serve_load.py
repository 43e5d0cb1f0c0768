"""Load test of `segformer serve` on 127.0.0.1 (issue 17): throughput, latency percentiles, errors and the
server's RSS at several client concurrencies, with dynamic batching on and off, against the offline
throughput of `segformer.inference.whole` on batches of the same images in one process.

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


def offline_throughput(model_dir: Path, images: list[bytes], batch: int, seconds: float) -> float:
    """Images/s of `segformer.inference.whole` on batches of the preprocessed images (no decoding, no argmax)."""
    model = segformer.load_model(model_dir).eval()
    x = ImageProcessor()([Image.open(io.BytesIO(b)) for b in images[:batch]])["pixel_values"]
    segformer.inference.whole(model, x)  # warm-up
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        segformer.inference.whole(model, x)
        done += x.shape[0]
    return done / (time.perf_counter() - start)


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
    start = time.monotonic()
    stop_at = start + duration
    threads = [threading.Thread(target=client, args=(server.port, images, stop_at, budget, bad_fraction, i, outcomes))
               for i in range(clients)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        rss.append((time.monotonic() - start, server.rss_mib()))
        time.sleep(0.5)
    elapsed = time.monotonic() - start
    sum1, count1 = batch_stats(server.port)
    return summarise(outcomes, rss, elapsed, clients, (sum1 - sum0) / max(count1 - count0, 1))


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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=60.0, help="seconds per concurrency level (default 60)")
    p.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16], help="concurrent clients (default 1 4 16)")
    p.add_argument("--max-requests", type=int, default=20000, help="request cap per level (default 20000)")
    p.add_argument("--bad-fraction", type=float, default=0.05, help="malformed or abandoned requests (default 0.05)")
    p.add_argument("--size", type=int, default=512, help="image side (default 512)")
    p.add_argument("--max-batch", type=int, default=8, help="the batching server's --max-batch (default 8)")
    p.add_argument("--servers", nargs="+", choices=SERVERS, default=list(SERVERS), help="which servers to run")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    retain_freed_memory()  # as the segformer command does in the server
    work = Path(tempfile.mkdtemp(prefix="serve_load_"))
    torch.manual_seed(0)
    segformer.create_model("segformer-b0", num_classes=150).save_pretrained(work / "b0")
    images = make_images(args.size)
    offline = offline_throughput(work / "b0", images, args.max_batch, max(10.0, args.duration / 3))
    print(f"offline segformer.inference.whole, batch {args.max_batch}: {offline:.2f} images/s", flush=True)
    results = {"offline_images_per_s": offline, "runs": []}
    for name in args.servers:
        flags = ["--max-batch", str(args.max_batch if name == "batching" else 1), "--max-wait-ms", "10"]
        server = ServerProcess(work / "b0", flags, work / f"{name}.log")
        try:
            for clients in args.levels:
                row = {"server": name, **run_level(server, images, clients, args.duration, args.max_requests,
                                                   args.bad_fraction)}
                results["runs"].append(row)
                print(json.dumps(row), flush=True)
        finally:
            row_exit = server.stop()
        print(f"{name} server exit code after SIGTERM: {row_exit}", flush=True)
    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


def print_table(results: dict) -> None:
    offline = results["offline_images_per_s"]
    print("\n| server | clients | img/s | vs offline | p50 ms | p95 ms | p99 ms | errors | lost | bad -> 400 | "
          "mean batch | peak RSS MiB | RSS 10-20 s / last 10 s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results["runs"]:
        flat = (f"{r['rss_second_10s_mib']:.0f} / {r['rss_last_10s_mib']:.0f}"
                if r["rss_second_10s_mib"] else "n/a (run < 20 s)")
        print(f"| {r['server']} | {r['clients']} | {r['throughput']:.2f} | {r['throughput'] / offline:.0%} | "
              f"{r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {r['p99_ms']:.0f} | {r['errors']} | {r['lost']} | "
              f"{r['garbage_400']}/{r['garbage_sent']} | {r['mean_batch']} | {r['peak_rss_mib']:.0f} | {flat} |")


if __name__ == "__main__":
    sys.exit(main())
