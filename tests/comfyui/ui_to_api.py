#!/usr/bin/env python3
"""Convert a ComfyUI *UI-format* workflow (frontend save: "nodes", "links",
"widgets_values") into the *API format* ({id: {class_type, inputs}}) that
POST /prompt accepts, using the server's GET /object_info.

Modelled on the frontend's graphToPrompt (Comfy-Org/ComfyUI_frontend,
src/utils/executionUtil.ts) and its widget constructors
(useIntWidget / useComboWidget / addValueControlWidgets / uploadImage /
uploadAudio / dynamicPrompts):

* Widgets are created per input in object_info order (input_order, required
  then optional).  widgets_values is positional over *all* widgets, including
  frontend-only ones that are not sent to the backend:
    - INT with control_after_generate (or, when the key is absent, an INT
      named 'seed' / 'noise_seed')           -> +1 'control_after_generate'
    - COMBO with control_after_generate      -> +2 (control, control_filter_list)
    - a required COMBO with image_upload / video_upload /
      animated_image_upload / audio_upload   -> +1 'upload' button at the end
      of the required widgets
  'forceInput' inputs have no widget.  A dict-valued widgets_values (some
  newer/custom nodes) is read by widget name.
* Links become [str(origin_id), origin_slot].  A link overrides the widget
  value of a converted widget input.
* Nodes with mode 2 (NEVER / muted) and 4 (BYPASS) are not emitted.  Links
  out of a bypassed node are rerouted to the bypassed node's input of the
  same type (trying the same slot index first); links out of a muted node
  are dropped (the input is removed, as the frontend does).
* Frontend-only nodes: Note / MarkdownNote are dropped, Reroute (and other
  pass-through virtual nodes) are followed, PrimitiveNode's value
  (widgets_values[0]) is written into the target widget.
* STRING widgets with dynamicPrompts: comments stripped and {a|b|c} resolved
  with a seeded RNG (the frontend uses Math.random()).
* List values are wrapped as {"__value__": [...]} (a bare list means a link).

Not handled: subgraphs (definitions.subgraphs), legacy group nodes
("workflow>..."), widgets added by custom-node JS in the middle of the widget
list, V3 dynamic inputs (COMFY_AUTOGROW_V3 / COMFY_DYNAMICCOMBO_V3) with
list-valued widgets_values.

CLI:  python ui_to_api.py workflow.json [--url http://127.0.0.1:8199 | --object-info oi.json]
"""
import json
import random
import re
import sys
import warnings

MODE_ALWAYS, MODE_ON_EVENT, MODE_NEVER, MODE_ON_TRIGGER, MODE_BYPASS = 0, 1, 2, 3, 4

# Widget types the core frontend knows (scripts/widgets.ts ComfyWidgets); COMBO
# also covers legacy list-of-options specs.
WIDGET_TYPES = {
    "INT", "FLOAT", "BOOLEAN", "STRING", "COMBO", "MARKDOWN", "COLOR", "IMAGECOMPARE",
    "BOUNDING_BOX", "CHART", "GALLERIA", "PAINTER", "COMPOSITOR", "TEXTAREA", "CURVE",
    "RANGE", "VIDEO_EDIT", "RESOLUTION_PREVIEW", "BOUNDING_BOXES", "COLORS",
}
DYNAMIC_V3_TYPES = {"COMFY_AUTOGROW_V3", "COMFY_DYNAMICCOMBO_V3", "COMFY_MATCHTYPE_V3"}
UPLOAD_FLAGS = ("image_upload", "video_upload", "animated_image_upload", "audio_upload")
# uploadImage.ts fallback for loaders served without the *_upload flag
KNOWN_MEDIA_LOADER_INPUTS = {"LoadImage": "image", "LoadImageMask": "image",
                             "LoadVideo": "file", "LoadAudio": "audio"}
# Frontend-only node types (never sent to the backend).
DROP_TYPES = {"Note", "MarkdownNote"}
PRIMITIVE_TYPES = {"PrimitiveNode"}
PASSTHROUGH_TYPES = {"Reroute"}


class ConversionError(ValueError):
    pass


# ----------------------------------------------------------------------------
# widget layout
# ----------------------------------------------------------------------------
def _spec_parts(spec):
    t = spec[0] if isinstance(spec, (list, tuple)) and spec else spec
    opts = spec[1] if isinstance(spec, (list, tuple)) and len(spec) > 1 and isinstance(spec[1], dict) else {}
    return t, opts


def _is_combo(t):
    return isinstance(t, list) or t == "COMBO"


def widget_layout(node_def, ui_widget_inputs=()):
    """Ordered widget slots of a node as the frontend creates them.

    Returns a list of (name, role, spec) with role in
    {'value', 'control', 'filter', 'upload'}; only 'value' slots are sent.
    ui_widget_inputs: names the UI marks as widget inputs (input.widget.name),
    used to recognise custom widget types registered by extensions.
    """
    inputs = node_def.get("input", {})
    order = node_def.get("input_order", {})
    layout = []
    for sec in ("required", "optional"):
        specs = inputs.get(sec) or {}
        names = order.get(sec) or list(specs.keys())
        upload_after = False
        for name in names:
            if name not in specs:
                continue
            t, opts = _spec_parts(specs[name])
            if opts.get("forceInput"):
                continue
            is_widget = _is_combo(t) or t in WIDGET_TYPES or t in DYNAMIC_V3_TYPES or name in ui_widget_inputs
            if not is_widget:
                continue
            layout.append((name, "value", specs[name]))
            if t == "INT":
                cag = opts.get("control_after_generate")
                if cag is None:
                    cag = name in ("seed", "noise_seed")
                if cag:
                    layout.append((name, "control", None))
            elif _is_combo(t) and opts.get("control_after_generate"):
                layout.append((name, "control", None))
                layout.append((name, "filter", None))
            if sec == "required" and _is_combo(t) and any(opts.get(f) for f in UPLOAD_FLAGS):
                upload_after = True
        if sec == "required":
            fb = KNOWN_MEDIA_LOADER_INPUTS.get(node_def.get("name", ""))
            if upload_after or (fb and fb in specs and _is_combo(_spec_parts(specs[fb])[0])):
                layout.append(("upload", "upload", None))
    return layout


def _default_for(spec):
    t, opts = _spec_parts(spec)
    if "default" in opts:
        return opts["default"]
    if isinstance(t, list):
        return t[0] if t else None
    if t == "COMBO":
        o = opts.get("options") or []
        return o[0] if o else None
    return {"INT": 0, "FLOAT": 0.0, "BOOLEAN": False, "STRING": ""}.get(t)


# ----------------------------------------------------------------------------
# dynamic prompts (extensions/core/dynamicPrompts.ts)
# ----------------------------------------------------------------------------
def resolve_dynamic_prompt(text, rng):
    text = re.sub(r"/\*[\s\S]*?\*/|//.*", "", text)
    while "{" in text.replace("\\{", "", 1) and "}" in text.replace("\\}", "", 1):
        start = text.replace("\\{", "00", 1).index("{")
        end = text.replace("\\}", "00", 1).index("}")
        if end < start:
            break
        options = text[start + 1:end].split("|")
        text = text[:start] + options[rng.randrange(len(options))] + text[end + 1:]
    return text


# ----------------------------------------------------------------------------
# main conversion
# ----------------------------------------------------------------------------
def _links_index(ui):
    out = {}
    for link in ui.get("links") or []:
        if isinstance(link, dict):
            lid = link["id"]
            out[lid] = (link["origin_id"], link["origin_slot"], link["target_id"], link["target_slot"],
                        link.get("type"))
        else:
            lid, oid, oslot, tid, tslot = link[:5]
            out[lid] = (oid, oslot, tid, tslot, link[5] if len(link) > 5 else None)
    return out


def ui_to_api(ui_workflow, object_info, *, dynamic_prompts=True, seed=0, strict=True, keep_meta=True):
    """Convert a UI-format workflow dict to an API-format prompt dict.

    strict: raise on node types missing from object_info (e.g. a custom node
    pack that failed to load); with strict=False they are treated as virtual
    pass-through nodes, like Reroute, with a warning.
    """
    if "nodes" not in ui_workflow:
        raise ConversionError("not a UI-format workflow (no 'nodes')")
    if (ui_workflow.get("definitions") or {}).get("subgraphs"):
        sub_ids = {s.get("id") for s in ui_workflow["definitions"]["subgraphs"]}
        if any(n.get("type") in sub_ids for n in ui_workflow["nodes"]):
            raise ConversionError("subgraph nodes are not supported by this converter")
    rng = random.Random(seed)
    nodes = {n["id"]: n for n in ui_workflow["nodes"]}
    links = _links_index(ui_workflow)

    def kind(node):
        t = node.get("type")
        if t in DROP_TYPES:
            return "drop"
        if t in PRIMITIVE_TYPES:
            return "primitive"
        if t in PASSTHROUGH_TYPES:
            return "passthrough"
        if t in object_info:
            return "real"
        if isinstance(t, str) and (t.startswith("workflow>") or t.startswith("workflow/")):
            raise ConversionError("legacy group node {!r} (node {}) is not supported".format(t, node.get("id")))
        if strict:
            raise ConversionError(f"node {node.get('id')}: type {t!r} not in object_info (missing custom node?)")
        warnings.warn(f"node {node.get('id')}: unknown type {t!r} treated as virtual pass-through", stacklevel=2)
        return "passthrough"

    kinds = {nid: kind(n) for nid, n in nodes.items()}

    def emitted(nid):
        n = nodes.get(nid)
        return n is not None and kinds[nid] == "real" and n.get("mode", 0) not in (MODE_NEVER, MODE_BYPASS)

    def resolve(link_id, want_type):
        """Follow a link back through bypassed / virtual nodes.
        Returns ('link', origin_id, slot) | ('value', v) | None."""
        seen = set()
        while link_id is not None and link_id not in seen:
            seen.add(link_id)
            lk = links.get(link_id)
            if lk is None:
                return None
            oid, oslot = lk[0], lk[1]
            parent = nodes.get(oid)
            if parent is None:
                return None
            pk = kinds[oid]
            if pk == "primitive":
                wv = parent.get("widgets_values")
                if isinstance(wv, dict):
                    wv = list(wv.values())
                return ("value", wv[0]) if wv else None
            if pk == "passthrough":
                pins = parent.get("inputs") or []
                if oslot >= len(pins):
                    return None
                link_id = pins[oslot].get("link")
                continue
            if pk == "drop":
                return None
            if parent.get("mode", 0) == MODE_BYPASS:
                pins = parent.get("inputs") or []
                idxs = [oslot] + list(range(len(pins)))
                match = next((i for i in idxs if i < len(pins) and pins[i].get("type") == want_type), None)
                if match is None:
                    return ("link", oid, oslot)   # dangling -> dropped below, like the frontend
                link_id = pins[match].get("link")
                if link_id is None:
                    return None
                continue
            return ("link", oid, oslot)
        return None

    out = {}
    for nid, node in nodes.items():
        if kinds[nid] != "real" or node.get("mode", 0) in (MODE_NEVER, MODE_BYPASS):
            continue
        ctype = node["type"]
        ndef = object_info[ctype]
        ui_inputs = node.get("inputs") or []
        ui_widget_inputs = {i["widget"]["name"] if isinstance(i.get("widget"), dict) else i["name"]
                            for i in ui_inputs if i.get("widget")}
        layout = widget_layout(ndef, ui_widget_inputs)
        inputs = {}
        wv = node.get("widgets_values")
        if wv is None:
            wv = []
        if isinstance(wv, dict):
            for name, role, spec in layout:
                if role == "value":
                    inputs[name] = wv[name] if name in wv else _default_for(spec)
        else:
            if len(wv) < len(layout):
                warnings.warn(f"node {nid} ({ctype}): {len(wv)} widgets_values for {len(layout)} widget slots; "
                              "missing ones use defaults", stacklevel=2)
            for i, (name, role, spec) in enumerate(layout):
                if role != "value":
                    continue
                inputs[name] = wv[i] if i < len(wv) else _default_for(spec)
        # dynamic prompts / list wrapping
        for name, role, spec in layout:
            if role != "value" or name not in inputs:
                continue
            t, opts = _spec_parts(spec)
            v = inputs[name]
            if dynamic_prompts and t == "STRING" and opts.get("dynamicPrompts") and isinstance(v, str):
                inputs[name] = resolve_dynamic_prompt(v, rng)
            elif isinstance(v, list):
                inputs[name] = {"__value__": v}
        # links (override widget values)
        for pin in ui_inputs:
            if pin.get("link") is None:
                continue
            name = pin["widget"]["name"] if isinstance(pin.get("widget"), dict) else pin["name"]
            r = resolve(pin["link"], pin.get("type"))
            if r is None:
                continue
            if r[0] == "value":
                inputs[name] = r[1]
            else:
                inputs[name] = [str(r[1]), int(r[2])]
        entry = {"class_type": ctype, "inputs": inputs}
        if keep_meta:
            entry["_meta"] = {"title": node.get("title") or ndef.get("display_name") or ctype}
        out[str(nid)] = entry

    # drop inputs linked to nodes that were not emitted (muted, unresolved bypass)
    for entry in out.values():
        for k, v in list(entry["inputs"].items()):
            if isinstance(v, list) and len(v) == 2 and v[0] not in out:
                del entry["inputs"][k]
    return out


def _main():
    import argparse
    import urllib.request
    ap = argparse.ArgumentParser(description="UI-format workflow -> API-format prompt")
    ap.add_argument("workflow")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--url", default="http://127.0.0.1:8199")
    g.add_argument("--object-info")
    ap.add_argument("--no-dynamic-prompts", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lenient", action="store_true", help="unknown node types become pass-through")
    a = ap.parse_args()
    with open(a.workflow) as f:
        ui = json.load(f)
    if a.object_info:
        with open(a.object_info) as f:
            oi = json.load(f)
    else:
        with urllib.request.urlopen(a.url.rstrip("/") + "/object_info", timeout=60) as r:
            oi = json.load(r)
    api = ui_to_api(ui, oi, dynamic_prompts=not a.no_dynamic_prompts, seed=a.seed, strict=not a.lenient)
    json.dump(api, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    _main()
