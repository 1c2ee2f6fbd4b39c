"""The public prompt corpora of the development checkout (``../shared/data/prompts``; not shipped with
the pack), read once for every benchmark that routes unseen prompts."""

from __future__ import annotations

import csv
import json
from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def read_corpora(data: Path = SHARED_DATA) -> dict[str, list[str]]:
    """Each corpus's distinct, non-blank prompts in file order."""
    p = Path(data) / "prompts"
    with open(p / "PartiPrompts.tsv", newline="", encoding="utf-8") as fh:
        parti = [r["Prompt"] for r in csv.DictReader(fh, delimiter="\t")]
    with open(p / "DrawBench_Prompts.csv", newline="", encoding="utf-8") as fh:
        drawbench = [r["Prompts"] for r in csv.DictReader(fh)]
    with open(p / "COCO_Captions_1000.csv", newline="", encoding="utf-8") as fh:
        coco = [r[0] for r in csv.reader(fh) if r]
    diffusiondb = [ln.strip() for ln in (p / "diffusiondb_2m_first_5k.txt").read_text(encoding="utf-8").splitlines()]
    geneval = [json.loads(ln)["prompt"] for ln in (p / "geneval_evaluation_metadata.jsonl").read_text().splitlines()
               if ln.strip()]
    tifa = [x["caption"] for x in json.loads((p / "tifa_v1.0_text_inputs.json").read_text())]
    out = {"DiffusionDB": diffusiondb, "COCO captions": coco, "PartiPrompts": parti, "DrawBench": drawbench,
           "GenEval": geneval, "TIFA v1.0 text inputs": tifa}
    return {k: [s for s in dict.fromkeys(v) if s.strip()] for k, v in out.items()}
