"""Drive a real, headless ComfyUI for the end-to-end tests and benchmarks.

ComfyUI is found through COMFYUI_DIR (its checkout) and COMFYUI_PYTHON (the python of its venv).
The pack and the test checkpoints stay outside ComfyUI's tree: an extra_model_paths.yaml adds a
checkpoints folder, a router_weights folder and a custom_nodes folder that links to this repo.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

sys.path.insert(0, str(HERE.parent))

from tiny_models import make_tiny_scorer  # noqa: E402
from ui_to_api import ui_to_api  # noqa: E402

CHECKPOINT_NAMES = ("v1-5-pruned-emaonly.safetensors", "sd_xl_base_1.0.safetensors",
                    "sd_xl_turbo_1.0_fp16.safetensors", "v2-1_768-ema-pruned.safetensors",
                    "alt_a.safetensors", "alt_b.safetensors", "plain.safetensors")


def comfy_paths() -> tuple[Path, Path] | None:
    d, py = os.environ.get("COMFYUI_DIR"), os.environ.get("COMFYUI_PYTHON")
    if not d or not py:
        return None
    return Path(d), Path(py)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Comfy:
    def __init__(self, comfy_dir: Path, python: Path, root: Path):
        self.dir, self.python, self.root = comfy_dir, python, root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None
        self.object_info = None

    # -- set-up ----------------------------------------------------------------------
    def prepare(self) -> None:
        r = self.root
        for sub in ("models/checkpoints", "models/router_weights", "models/clip_scorers", "custom_nodes", "input",
                    "output", "user", "temp"):
            (r / sub).mkdir(parents=True, exist_ok=True)
        (r / "custom_nodes" / "ComfyUI-CostAwareRouter").symlink_to(REPO, target_is_directory=True)
        tiny = r / "models" / "tiny_sd15.safetensors"
        subprocess.run([sys.executable, str(HERE / "make_tiny_sd15.py"), str(tiny), "--seed", "0"], check=True,
                       capture_output=True)
        for name in CHECKPOINT_NAMES:  # one file, several names: each name is its own checkpoint to ComfyUI
            (r / "models" / "checkpoints" / name).symlink_to(tiny)
        # listed by ComfyUI (a dangling link) but gone from disk when it is loaded
        (r / "models" / "checkpoints" / "gone.safetensors").symlink_to(r / "models" / "deleted.safetensors")
        make_tiny_scorer(r / "models" / "clip_scorers" / "tiny_clip")
        (r / "extra_model_paths.yaml").write_text(
            f"e2e:\n    base_path: {r}\n    checkpoints: models/checkpoints/\n"
            f"    router_weights: models/router_weights/\n    clip_scorers: models/clip_scorers/\n"
            f"    custom_nodes: custom_nodes/\n")

    def start(self, timeout: float = 180.0) -> None:
        r = self.root
        self.log = open(r / "server.log", "w")
        self.proc = subprocess.Popen(
            [str(self.python), "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
             "--extra-model-paths-config", str(r / "extra_model_paths.yaml"), "--input-directory", str(r / "input"),
             "--output-directory", str(r / "output"), "--user-directory", str(r / "user"),
             "--temp-directory", str(r / "temp"), "--disable-api-nodes", "--disable-auto-launch"],
            cwd=self.dir, stdout=self.log, stderr=subprocess.STDOUT,
            env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited early:\n{self.server_log()[-3000:]}")
            try:
                self.object_info = self.get("/object_info")
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(1)
        raise RuntimeError(f"ComfyUI did not answer within {timeout} s:\n{self.server_log()[-3000:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if getattr(self, "log", None):
            self.log.close()

    def server_log(self) -> str:
        return (self.root / "server.log").read_text(errors="replace")

    # -- HTTP ------------------------------------------------------------------------
    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=30) as resp:
            return json.loads(resp.read())

    def post(self, path: str, data: dict):
        req = urllib.request.Request(self.url + path, data=json.dumps(data).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def queue(self, prompt: dict, workflow: dict | None = None, client_id: str | None = None) -> str:
        """Queue an API prompt; ``workflow`` (UI format) travels as extra_pnginfo, as the frontend sends it."""
        data = {"prompt": prompt, "client_id": client_id or uuid.uuid4().hex}
        if workflow is not None:
            data["extra_data"] = {"extra_pnginfo": {"workflow": workflow}}
        status, body = self.post("/prompt", data)
        if status != 200:
            raise AssertionError(f"/prompt refused ({status}): {json.dumps(body)[:2000]}")
        return body["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 600.0) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            hist = self.get(f"/history/{prompt_id}")
            if prompt_id in hist and hist[prompt_id].get("status", {}).get("completed") is not None:
                entry = hist[prompt_id]
                if entry["status"].get("status_str") in ("success", "error"):
                    return entry
            time.sleep(0.05)
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout} s")

    def run(self, prompt: dict, timeout: float = 600.0, workflow: dict | None = None) -> dict:
        return self.wait(self.queue(prompt, workflow), timeout)

    def run_watching(self, prompt: dict, timeout: float = 600.0) -> tuple[dict, list[str]]:
        """Queue ``prompt`` and follow it on ComfyUI's websocket, as the frontend does: (its history entry,
        the ids of the nodes that executed, in order; a node taken from the cache sends nothing)."""
        client_id = uuid.uuid4().hex
        executed: list[str] = []
        with WebSocket("127.0.0.1", self.port, f"/ws?clientId={client_id}", timeout) as ws:
            prompt_id = self.queue(prompt, client_id=client_id)
            while True:
                msg = ws.message()
                data = msg.get("data") or {}
                if data.get("prompt_id") != prompt_id:
                    continue
                if msg.get("type") == "executing" and data.get("node") is not None:
                    executed.append(str(data["node"]))
                if msg.get("type") in ("execution_success", "execution_error", "execution_interrupted"):
                    break
        return self.wait(prompt_id, timeout), executed

    def convert(self, ui_workflow: dict) -> dict:
        api = ui_to_api(ui_workflow, self.object_info)
        for node in api.values():
            node.pop("_meta", None)
        return api


class WebSocket:
    """Just enough of a websocket client (RFC 6455) to read ComfyUI's /ws messages, without a package:
    the handshake, then server frames (never masked); binary frames (previews) are skipped."""

    def __init__(self, host: str, port: int, path: str, timeout: float):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                          f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                          .encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(f"websocket handshake refused: {head[:200]!r}")

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("websocket closed by ComfyUI")
        self.buf += chunk

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def message(self) -> dict:
        """The next text message, parsed as JSON."""
        parts, opcode = [], None
        while True:
            b0, b1 = self._take(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._take(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._take(8))[0]
            payload = self._take(n)
            op = b0 & 0x0F
            if op == 8:
                raise ConnectionError("websocket closed by ComfyUI")
            if op >= 8:  # ping / pong: the server sends none without a heartbeat, and nothing here needs them
                continue
            opcode = op or opcode
            parts.append(payload)
            if b0 & 0x80:
                if opcode == 1:
                    return json.loads(b"".join(parts))
                parts, opcode = [], None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.sock.close()


def error_message(entry: dict) -> str:
    for kind, data in entry["status"].get("messages", []):
        if kind == "execution_error":
            return data.get("exception_message", "")
    return ""


def texts(entry: dict, node_id: str) -> list[str]:
    return entry.get("outputs", {}).get(str(node_id), {}).get("text", [])


def api_route_graph(candidates, router: str, prompt: str, size: int = 64, budget_mode: str = "best quality",
                    save_prefix: str = "e2e", budget_value: float = 1.0, **route_inputs) -> dict:
    """An API-format route-and-generate graph: candidates -> pool -> router -> KSampler -> save.
    A candidate is (label, checkpoint, steps, cfg[, cost in s/image])."""
    g: dict = {}
    prev = None
    for i, (label, ckpt, steps, cfg, *cost) in enumerate(candidates, start=1):
        inputs = {"label": label, "ckpt_name": ckpt, "steps": steps, "cfg": cfg, "sampler_name": "euler",
                  "scheduler": "normal", "cost": cost[0] if cost else 0.0}
        if prev:
            inputs["candidates"] = [prev, 0]
        g[f"c{i}"] = {"class_type": "CostAwareRouter.Candidate", "inputs": inputs}
        prev = f"c{i}"
    g["pool"] = {"class_type": "CostAwareRouter.CandidatePool",
                 "inputs": {"candidates": [prev, 0], "load_policy": "load on first use", "max_resident": 0}}
    g["route"] = {"class_type": "CostAwareRouter.Route",
                  "inputs": {"pool": ["pool", 0], "prompt": prompt, "router": router, "budget_mode": budget_mode,
                             "budget_value": budget_value, "max_cost": 0.0, "force_candidate": "", **route_inputs}}
    g.update(sampling_tail(["route", 0], ["route", 1], ["route", 2], prompt, ["route", 3], ["route", 4],
                           ["route", 5], ["route", 6], size, save_prefix))
    return g


def api_plain_graph(ckpt: str, prompt: str, steps: int, cfg: float, size: int = 64, save_prefix="plain") -> dict:
    g = {"load": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}}}
    g.update(sampling_tail(["load", 0], ["load", 1], ["load", 2], prompt, steps, cfg, "euler", "normal", size,
                           save_prefix))
    return g


def sampling_tail(model, clip, vae, prompt, steps, cfg, sampler, scheduler, size, prefix, key: str = "") -> dict:
    """Encode, sample, decode and save; ``key`` goes before every node id (a second tail in one graph)."""
    return {
        f"{key}pos": {"class_type": "CLIPTextEncode", "inputs": {"clip": clip, "text": prompt}},
        f"{key}neg": {"class_type": "CLIPTextEncode", "inputs": {"clip": clip, "text": "blurry"}},
        f"{key}latent": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        f"{key}sample": {"class_type": "KSampler", "inputs": {
            "model": model, "positive": [f"{key}pos", 0], "negative": [f"{key}neg", 0],
            "latent_image": [f"{key}latent", 0], "seed": 0, "steps": steps, "cfg": cfg, "sampler_name": sampler,
            "scheduler": scheduler, "denoise": 1.0}},
        f"{key}decode": {"class_type": "VAEDecode", "inputs": {"samples": [f"{key}sample", 0], "vae": vae}},
        f"{key}save": {"class_type": "SaveImage", "inputs": {"images": [f"{key}decode", 0], "filename_prefix": prefix}},
    }


def api_verify_graph(candidates, router: str, prompt: str, first_score: float, dear_score: float, size: int = 64,
                     **route_inputs) -> dict:
    """api_route_graph with verify and escalate: the routed image's score -> Escalation Plan -> the dear branch
    (a second encode, KSampler "dear_sample" and decode on the escalation's model and settings) -> Verify and
    Escalate (lazy dear inputs) -> save. Both scores are constants (PrimitiveFloat), so a test chooses whether
    the router keeps or escalates, and which image is better."""
    g = api_route_graph(candidates, router, prompt, size, save_prefix="verify", **route_inputs)
    g["route"]["inputs"]["verify_and_escalate"] = True
    g["first_score"] = {"class_type": "PrimitiveFloat", "inputs": {"value": first_score}}
    g["plan"] = {"class_type": "CostAwareRouter.EscalationPlan",
                 "inputs": {"route": ["route", 9], "first_score": ["first_score", 0]}}
    dear = sampling_tail(["plan", 0], ["plan", 1], ["plan", 2], prompt, ["plan", 3], ["plan", 4], ["plan", 5],
                         ["plan", 6], size, "unused", key="dear_")
    del dear["dear_save"]  # a save there would pull the dear branch every time
    g.update(dear)
    g["dear_score"] = {"class_type": "PrimitiveFloat", "inputs": {"value": dear_score}}
    g["verify"] = {"class_type": "CostAwareRouter.VerifyEscalate", "inputs": {
        "escalation": ["plan", 9], "first_image": ["decode", 0], "dear_image": ["dear_decode", 0],
        "dear_score": ["dear_score", 0]}}
    g["save"]["inputs"]["images"] = ["verify", 0]
    return g


def copy_data(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, dirs_exist_ok=True)


def alternating_prompt(i: int) -> str:
    return f"a photo of a tabby cat, number {i}" if i % 2 == 0 else f"a red sports car on a highway, number {i}"


def train_alternating_router(folder: Path, name: str = "alternating.safetensors") -> str:
    """A router trained (by the core) on synthetic ratings where cat prompts favour candidate 'cats'
    and car prompts candidate 'cars', at equal cost: it sends alternating_prompt(i) alternately."""
    import numpy as np

    from cost_aware_router.embed import get_embedder
    from cost_aware_router.router_file import save_router
    from cost_aware_router.scored import Dataset
    from cost_aware_router.train import train_router

    rng = np.random.default_rng(0)
    cats = [f"a photo of a {c} cat {w}" for c in ("grey", "black", "ginger", "white") for w in
            ("sleeping", "playing", "on a sofa", "in the garden", "at night", "in the snow")]
    cars = [f"a {c} sports car {w}" for c in ("red", "blue", "yellow", "green") for w in
            ("on a race track", "in the city", "at sunset", "in the rain", "parked", "on a mountain road")]
    prompts = cats + cars
    q = np.array([[1.0, 0.0]] * len(cats) + [[0.0, 1.0]] * len(cars)) + rng.normal(scale=0.1, size=(len(prompts), 2))
    ds = Dataset(prompts, ["cats", "cars"], q, np.ones_like(q), np.array([1.0, 1.0]), {})
    save_router(train_router(ds, get_embedder(), "knn"), folder / name, overwrite=True)
    return name


ESCALATING_CANDIDATES = [("cheap", "alt_a.safetensors", 2, 7.0, 0.5), ("dear", "alt_b.safetensors", 3, 7.0, 2.0)]


def train_escalating_router(folder: Path, name: str = "escalating.safetensors") -> str:
    """A router whose verify-and-escalate policy pays, switched on by the core's gate by itself: 40 prompts,
    3 scored images of each candidate; 'cheap' (0.5 s) gives a good image (4.5) or a bad one (1.0) at random,
    'dear' (2 s) a steady 4.0. So a bad cheap image is worth escalating, a good one is not."""
    import tempfile

    import numpy as np

    from cost_aware_router.embed import get_embedder
    from cost_aware_router.router_file import save_router
    from cost_aware_router.scored import load_dataset
    from cost_aware_router.train import train_router

    rng = np.random.default_rng(0)
    subjects = ("a lighthouse", "a red fox", "a bowl of ramen", "a sailing boat", "an old library", "a mountain lake",
                "a city street", "a steam train", "a cup of coffee", "a desert canyon")
    prompts = [f"{s} {w}" for s in subjects for w in ("at dawn", "in watercolour", "as a pencil sketch", "in the rain")]
    rows = []
    for p in prompts:
        for seed in range(3):
            for label, ckpt, steps, cfg, cost in ESCALATING_CANDIDATES:
                score = rng.choice([1.0, 4.5]) if label == "cheap" else 4.0
                rows.append({"prompt": p, "candidate": label, "seed": seed, "cost": cost, "checkpoint": ckpt,
                             "steps": steps, "cfg": cfg, "score": float(score + rng.normal(0, 0.1))})
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "generations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        ds = load_dataset(tmp)
    save_router(train_router(ds, get_embedder(), "knn"), folder / name, overwrite=True)
    return name


# The candidates of the collect_scored_generations and route_score_learn templates, standing in for
# TIFA-160's three (tests/data/tifa_160), whose CLIPScore (ViT-B/32) is the metric.
SWEEP_LABELS = {"sd11-50": "sd15-25", "sd15-50": "sd15-8", "sd21-50": "sdxl-turbo-1"}


def train_sweep_router(folder: Path, name: str) -> str:
    """A router over the templates' own candidates (sd15-25, sd15-8, sdxl-turbo-1), trained by the core on
    TIFA-160's CLIPScores relabelled: what train_router makes from a collect_scored_generations folder."""
    import tempfile

    from cost_aware_router.embed import get_embedder
    from cost_aware_router.router_file import save_router
    from cost_aware_router.scored import load_dataset
    from cost_aware_router.train import train_router

    rows = [json.loads(line) for line in (REPO / "tests" / "data" / "tifa_160" / "generations.jsonl").read_text(
        encoding="utf-8").splitlines()]
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "generations.jsonl").write_text("".join(
            json.dumps({**r, "candidate": SWEEP_LABELS[r["candidate"]]}) + "\n" for r in rows), encoding="utf-8")
        ds = load_dataset(tmp, metric="clipscore_vitb32")
    save_router(train_router(ds, get_embedder(), "knn"), folder / name, overwrite=True)
    return name


def score_new_candidate_on_anchors(folder: Path, label: str) -> None:
    """The new candidate's scores on the default router's anchors, as the add_candidate note asks for:
    stand-in ratings (AGIQA-3K's sd15-50 MOS from tests/data, the router's own scale) at 0.8 s per image."""
    from cost_aware_router.extend import anchor_prompts
    from cost_aware_router.router_file import load_router

    anchors = set(anchor_prompts(load_router(REPO / "router_weights" / "default.safetensors")))
    rows = [json.loads(line) for line in (REPO / "tests" / "data" / "agiqa_3k" / "generations.jsonl").read_text(
        encoding="utf-8").splitlines()]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "generations.jsonl").write_text("".join(
        json.dumps({**r, "candidate": label, "cost": 0.8, "steps": 25}) + "\n"
        for r in rows if r["candidate"] == "sd15-50" and r["prompt"] in anchors), encoding="utf-8")
