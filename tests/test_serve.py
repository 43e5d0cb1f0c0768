"""`segformer serve` over real HTTP on 127.0.0.1: every status code, limits, batching, SIGTERM, and label maps
equal to `segformer predict` byte for byte."""

from __future__ import annotations

import io
import json
import signal
import socket
import struct
import threading
import time
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from segformer.cli import main
from segformer.inference import run_model
from segformer.serve.batcher import DynamicBatcher
from segformer.serve.engine import RequestError, parse_options, rle
from segformer.visualize import overlay
from serve_helpers import EXAMPLE, NUM_CLASSES, Server

IMAGE = EXAMPLE.read_bytes()
IMAGE_SIZE = Image.open(EXAMPLE).size


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(side: int = 50000) -> bytes:
    """A side x side 1-bit PNG of one colour, compressed row by row (never held whole): ~300 kB on disk,
    7.5 GB as the RGB array a careless server would decode."""
    row = b"\x00" * (1 + side // 8)
    compress, parts = zlib.compressobj(9), []
    for _ in range(side):
        parts.append(compress.compress(row))
    parts.append(compress.flush())
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", b"".join(parts)) + _chunk(b"IEND", b"")


def _segment_cli(tmp_path, model, *flags) -> bytes:
    out = tmp_path / "cli"
    assert main(["predict", str(EXAMPLE), "--model", str(model), "--out", str(out), "--no-overlay", *flags]) == 0
    return (out / "chelsea.png").read_bytes()


@pytest.mark.parametrize("query, flags", [
    ("", []),
    ("?mode=slide&crop=256&stride=171&scales=0.5&flip=true",
     ["--mode", "slide", "--crop", "256", "--stride", "171", "--scales", "0.5", "--flip"]),
])
def test_label_map_equals_segformer_predict_byte_for_byte(server, served_model, tmp_path, query, flags):
    status, headers, body = server.request("POST", f"/v1/segment{query}", IMAGE)
    assert status == 200 and headers["content-type"] == "image/png"
    assert float(headers["x-latency-ms"]) > 0
    assert body == _segment_cli(tmp_path, served_model, *flags)


def test_json_areas_rle_and_overlay(server):
    _, _, png = server.request("POST", "/v1/segment", IMAGE)
    labels = np.asarray(Image.open(io.BytesIO(png)))
    # multipart upload, as curl -F and the browser send it
    boundary = "segformer-test-boundary"
    form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"cat.jpg\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + IMAGE + f"\r\n--{boundary}--\r\n".encode()
    status, summary = server.json("POST", "/v1/segment?format=json&rle=1", form,
                                  headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert status == 200 and (summary["height"], summary["width"]) == labels.shape
    counts = np.bincount(labels.ravel(), minlength=NUM_CLASSES)
    assert {c["id"]: c["pixels"] for c in summary["classes"]} == {i: int(n) for i, n in enumerate(counts) if n}
    assert [c["pixels"] for c in summary["classes"]] == sorted((c["pixels"] for c in summary["classes"]), reverse=True)
    assert sum(c["share"] for c in summary["classes"]) == pytest.approx(1.0)
    for c in summary["classes"]:  # decode COCO's column-major RLE
        mask = np.repeat(np.arange(len(summary["masks"][str(c["id"])]["counts"])) % 2,
                         summary["masks"][str(c["id"])]["counts"]).astype(bool)
        np.testing.assert_array_equal(mask.reshape(labels.shape[::-1]).T, labels == c["id"])
    status, headers, jpeg = server.request("POST", "/v1/segment?format=overlay&opacity=0.6", IMAGE)
    assert status == 200 and headers["content-type"] == "image/jpeg"
    picture = np.asarray(Image.open(io.BytesIO(jpeg)), dtype=np.float32)
    rgb = np.asarray(Image.open(EXAMPLE).convert("RGB"))
    expected = overlay(rgb, labels, np.asarray([c for c in json.loads(server.request("GET", "/v1/model")[2])
                                                ["palette"]], dtype=np.uint8), 0.6)
    assert np.abs(picture - expected).mean() < 3.0  # JPEG quality 90


def test_model_health_metrics_and_page(server):
    status, info = server.json("GET", "/v1/model")
    assert status == 200 and info["num_classes"] == NUM_CLASSES and len(info["classes"]) == NUM_CLASSES
    assert info["input"]["size"] == [512, 512] and info["token_merging"] is None and info["limits"]["max_queue"] == 4
    assert info["runtime"] == "torch" and info["runtime_choice"].startswith("runtime torch")  # conftest's default
    assert "--runtime torch" in server.log.read_text()  # printed at start
    assert server.json("GET", "/healthz") == (200, {"status": "ok"})
    assert server.json("GET", "/readyz") == (200, {"status": "ready"})
    status, headers, page = server.request("GET", "/")
    assert status == 200 and b"<canvas" in page and b"http" not in page.split(b"<script>")[1]  # no CDN
    assert server.request("GET", "/example.jpg")[2] == IMAGE
    assert server.request("POST", "/v1/segment", IMAGE)[0] == 200
    status, headers, text = server.request("GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    text = text.decode()
    for name in ("segformer_requests_total{route=\"/v1/segment\",status=\"200\"}", "segformer_request_seconds_bucket",
                 "segformer_batch_size_bucket", "segformer_queue_depth"):
        assert name in text


@pytest.mark.parametrize("method, path, body, status, words", [
    ("POST", "/v1/segment", b"", 400, "empty body"),
    ("POST", "/v1/segment", b"just some text, not an image", 400, "not an image"),
    ("POST", "/v1/segment", IMAGE[:len(IMAGE) // 3], 400, "corrupt JPEG"),
    ("POST", "/v1/segment?format=gif", IMAGE, 400, "accepted: png, json, overlay"),
    ("POST", "/v1/segment?mode=slide&crop=64&stride=128", IMAGE, 400, "stride"),
    ("POST", "/v1/segment?colour=red", IMAGE, 400, "unknown query parameter"),
    ("POST", "/v1/segment", b"\0" * (3 * 2**20), 413, "limit of 2097152 bytes"),
    ("POST", "/v1/segment", _png(Image.new("L", (2500, 2000))), 413, "at most 4000000 (--max-pixels)"),
    ("GET", "/v1/segment", None, 405, "not allowed"),
    ("GET", "/nowhere", None, 404, "no route /nowhere"),
])
def test_errors_are_json_naming_the_problem(server, method, path, body, status, words):
    got, answer = server.json(method, path, body)
    assert got == status and words in answer["error"], answer


def test_decompression_bomb_answers_413_without_allocating(server):
    bomb = bomb_png()
    assert len(bomb) < 2**20
    before = int(server.status_file()["VmRSS"].split()[0])
    with open(f"/proc/{server.proc.pid}/clear_refs", "w") as f:
        f.write("5")  # reset the peak resident set (VmHWM) to the current one
    status, answer = server.json("POST", "/v1/segment", bomb)
    peak = int(server.status_file()["VmHWM"].split()[0])
    assert status == 413 and "at most 4000000 (--max-pixels)" in answer["error"]
    assert peak - before < 100 * 1024, f"server memory rose by {(peak - before) / 1024:.0f} MB"


def _partial_upload(server, total: int = 10**6) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(f"POST /v1/segment HTTP/1.1\r\nHost: x\r\nContent-Length: {total}\r\n\r\n".encode() + IMAGE[:100])
    return sock


def _wait_queue_depth(server, depth: int) -> None:
    deadline = time.monotonic() + 20
    while f"segformer_queue_depth {depth:.1f}".encode() not in server.request("GET", "/metrics")[2]:
        assert time.monotonic() < deadline, f"the queue depth never reached {depth}"
        time.sleep(0.05)


def test_full_queue_503_then_disconnects_do_not_disturb(server):
    held = [_partial_upload(server) for _ in range(4)]  # --max-queue 4: four uploads in flight fill it
    try:
        _wait_queue_depth(server, 4)
        status, headers, body = server.request("POST", "/v1/segment", IMAGE)
        assert status == 503 and headers["retry-after"] == "1" and b"--max-queue 4" in body
        assert server.json("GET", "/healthz")[0] == 200  # health checks still answered
    finally:
        for sock in held:  # clients that vanish mid-upload
            sock.close()
    results = []

    def client():
        results.append(server.request("POST", "/v1/segment", IMAGE)[0])

    def vanishing_client():  # sends a whole request, leaves before the answer (mid-batch)
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(f"POST /v1/segment HTTP/1.1\r\nHost: x\r\nContent-Length: {len(IMAGE)}\r\n\r\n".encode()
                         + IMAGE)
    _wait_queue_depth(server, 0)
    threads = [threading.Thread(target=f) for f in (client, vanishing_client, client, vanishing_client)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200, 200]
    assert server.json("GET", "/readyz")[0] == 200


def test_sigterm_finishes_in_flight_requests_then_exits_0(served_model, tmp_path):
    srv = Server(served_model, "--max-batch", "2", "--max-queue", "4", log=tmp_path / "server.log")
    try:
        sock = socket.create_connection(("127.0.0.1", srv.port))
        head = f"POST /v1/segment?format=json HTTP/1.1\r\nHost: x\r\nContent-Length: {len(IMAGE)}\r\n\r\n"
        sock.sendall(head.encode() + IMAGE[:1000])  # in flight: admitted, body half sent
        time.sleep(0.5)
        srv.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        with pytest.raises(OSError):  # no longer accepting
            socket.create_connection(("127.0.0.1", srv.port), timeout=2).close()
        sock.sendall(IMAGE[1000:])
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        sock.close()
        assert answer.startswith(b"HTTP/1.1 200") and b'"classes"' in answer
        assert srv.proc.wait(30) == 0
    finally:
        srv.stop()


def test_options_are_checked():
    assert parse_options({"mode": "slide", "crop": "256,320", "stride": "128", "scales": "0.5,1", "flip": "true"}
                         ).crop == (256, 320)
    for query, words in [({"scales": "0.5,9"}, "scales takes"), ({"flip": "maybe"}, "flip takes true or false"),
                         ({"opacity": "2"}, "opacity must be in [0, 1]"), ({"crop": "a"}, "crop takes")]:
        with pytest.raises(RequestError, match=words.replace("[", r"\[").replace("]", r"\]")) as info:
            parse_options(query)
        assert info.value.status == 400


def test_rle_is_cocos_column_major_with_zeros_first():
    mask = np.array([[1, 0, 1], [1, 1, 0]], dtype=bool)
    assert rle(mask) == {"size": [2, 3], "counts": [0, 2, 1, 2, 1]}  # columns: 1 1 | 0 1 | 1 0
    assert rle(~mask)["counts"] == [2, 1, 2, 1]


def test_batcher_groups_by_shape_and_matches_single_runs():
    torch.manual_seed(0)
    import segformer

    model = segformer.create_model("segformer-b0", depths=(1, 1, 1, 1), num_classes=3).eval()
    sizes = []
    batcher = DynamicBatcher(model, max_batch=3, max_wait_ms=300, on_batch=sizes.append).start()
    inputs = [torch.randn(1, 3, 64, 64) for _ in range(4)] + [torch.randn(1, 3, 96, 64)]
    futures = [batcher.submit(x) for x in inputs]
    outputs = [f.result(timeout=60) for f in futures]
    batcher.stop()
    assert sorted(sizes) == [1, 1, 3]  # 64x64: a batch of 3 then 1; the lone 96x64 alone
    for x, out in zip(inputs, outputs):
        torch.testing.assert_close(out, run_model(model, x), atol=1e-5, rtol=1e-5)
    with pytest.raises(RuntimeError, match="stopped"):
        batcher.submit(inputs[0])


def test_readiness_before_and_after_a_failed_load(tmp_path):
    pytest.importorskip("fastapi")
    from segformer.serve.app import Metrics, ServerState
    from segformer.serve.engine import ServeConfig

    state = ServerState(ServeConfig(model=str(tmp_path / "missing")), Metrics())
    with pytest.raises(RequestError, match="still loading") as info:
        state.ready()
    assert info.value.status == 503 and info.value.headers == {"Retry-After": "1"}
    state.load()
    with pytest.raises(RequestError, match="loading model .*missing failed") as info:
        state.ready()
    assert info.value.status == 500
    state.close()


def test_pose_model_answers_keypoints(tmp_path):
    """A pose model (served in-process): /v1/keypoints equals `predict_keypoints`; /v1/segment says where to go."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    import segformer
    from segformer.pose_inference import predict_keypoints
    from segformer.preprocess import to_rgb_array
    from segformer.serve import ServeConfig, create_app

    torch.manual_seed(0)
    model = segformer.create_model("segformer-b0-pose", depths=(1, 1, 1, 1)).eval()
    model.save_pretrained(tmp_path / "pose")
    with TestClient(create_app(ServeConfig(model=str(tmp_path / "pose"), max_batch=2))) as client:
        deadline = time.monotonic() + 120
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, client.get("/readyz").json()
            time.sleep(0.2)
        assert client.get("/v1/model").json()["task"] == "pose"
        answer = client.post("/v1/keypoints?boxes=10,20,200,290;150,0,440,280", content=IMAGE)
        wrong = client.post("/v1/segment", content=IMAGE)
        bad = client.post("/v1/keypoints?boxes=10,20,5,290", content=IMAGE)
    assert answer.status_code == 200, answer.text
    people = answer.json()["people"]
    boxes = np.array([[10, 20, 200, 290], [150, 0, 440, 280]], dtype=np.float32)
    points, scores = predict_keypoints(segformer.load_model(tmp_path / "pose").eval(), to_rgb_array(EXAMPLE), boxes)
    assert [p["box"] for p in people] == boxes.tolist()
    np.testing.assert_allclose(np.array([p["keypoints"] for p in people]),
                               np.concatenate([points, scores[..., None]], 2), atol=0.006)
    assert wrong.status_code == 400 and "/v1/keypoints" in wrong.json()["error"]
    assert bad.status_code == 400 and "x2 > x1" in bad.json()["error"]


def test_onnxruntime_gives_the_torch_runtimes_label_map(served_model):
    """`--runtime onnxruntime` (our ONNX export, run by onnxruntime) answers the label map of the PyTorch runtime."""
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    from segformer.serve.engine import Segmenter, SegmentOptions, ServeConfig

    answers = {}
    for runtime in ("torch", "onnxruntime"):
        segmenter = Segmenter(ServeConfig(model=str(served_model), runtime=runtime, max_batch=2))
        try:
            assert segmenter.describe()["runtime"] == runtime
            answers[runtime] = segmenter.segment(IMAGE, SegmentOptions())[0]
        finally:
            segmenter.close()
    labels = {k: np.asarray(Image.open(io.BytesIO(v))) for k, v in answers.items()}
    assert labels["torch"].shape == (IMAGE_SIZE[1], IMAGE_SIZE[0]) and len(np.unique(labels["torch"])) > 1
    np.testing.assert_array_equal(labels["onnxruntime"], labels["torch"])
    with pytest.raises(ValueError, match="unknown runtime 'tensorrt'; accepted: auto, torch"):
        ServeConfig(model=str(served_model), runtime="tensorrt")
