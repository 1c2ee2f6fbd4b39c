// Cost-Aware Router: draws each node's report (the text its Python side returns as ui "text") in a
// read-only box at the bottom of the node, and keeps it there.
//
// * The box has a minimum height per node type and exists from the moment the node is created, so a
//   node is the same size before and after a run and the example workflows never overlap. A longer
//   report scrolls inside the box (a fade at its bottom edge says there is more), and the box grows
//   with the node when the node is made taller: nothing is cut.
// * A node that fails shows the error in its box instead of its last report (one listener for every
//   node of the pack: ComfyUI's execution_error event), so a failed run never looks like a decision.
// * The text is kept in the node's properties (saved with the workflow, which the frontend keeps
//   across page loads), so the router's decision is still shown in a new page session; the Python
//   nodes set has_intermediate_output, so ComfyUI re-sends a cached node's report on a cached re-run.
// * The box is not a node input: it is never serialised into widgets_values or the prompt.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const PROPERTY = "cost_aware_router_report";
const WIDGET = "cost_aware_router_report";
const LINE_PX = 14;
const FAILED = "failed: ";

// node id -> [lines of text the box shows without scrolling, what it says before the first run]
export const REPORTS = {
  "CostAwareRouter.Candidate": [3, "After a run: this candidate's settings and where its cost comes from."],
  "CostAwareRouter.CandidatePool": [6, "After a run: which checkpoints this pool has loaded."],
  "CostAwareRouter.Route": [20, "After a run: the router's choice for this prompt and why, every candidate's " +
    "predicted quality and cost, and what the budget means."],
  "CostAwareRouter.MeasureCosts": [6, "After a run: each candidate's measured seconds per image on this machine."],
  "CostAwareRouter.CandidateSweep": [3, "After a run: how many generations are left to do."],
  "CostAwareRouter.SaveScoredGeneration": [3, "After a run: the last generation saved and its score."],
  "CostAwareRouter.AnchorPrompts": [12, "After a run: the router's anchor prompts, one per line."],
  "CostAwareRouter.AddCandidate": [6, "After a run: how the new candidate was added and where it was saved."],
  "CostAwareRouter.Train": [9, "After a run: what was trained, how well, and where it was saved."],
  "CostAwareRouter.ExportTable": [7, "After a run: which rating table was written where, its candidates and metrics."],
  "CostAwareRouter.Feedback": [5, "After a run: what the router learnt from this score."],
  "CostAwareRouter.EscalationPlan": [8, "After a run: whether the first image is kept or a dearer candidate " +
    "generates again, and why."],
  "CostAwareRouter.VerifyEscalate": [10, "After a run: which image is delivered, and why."],
};

// A DOM widget is drawn with a 10 px margin above and below its element.
const MARGIN_PX = 20;
const PADDING_PX = 4;

export function boxHeight(type) {
  return REPORTS[type][0] * LINE_PX + 2 * PADDING_PX + MARGIN_PX;
}

function reportText(output) {
  const text = output?.text;
  if (text === undefined || text === null) return null;
  return Array.isArray(text) ? text.join("\n") : String(text);
}

function addReportBox(node, type) {
  if (typeof node.addDOMWidget !== "function") return null;  // a frontend without DOM widgets
  const [, placeholder] = REPORTS[type];
  const el = document.createElement("div");
  el.className = "cost-aware-router-report";
  el.dataset.nodeType = type;
  Object.assign(el.style, {
    boxSizing: "border-box", width: "100%", height: "100%", minHeight: `${boxHeight(type) - MARGIN_PX}px`,
    overflowX: "hidden", overflowY: "auto", scrollbarWidth: "thin", padding: `${PADDING_PX}px 6px`,
    font: `11px/${LINE_PX}px ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace`,
    whiteSpace: "pre-wrap", wordBreak: "normal", overflowWrap: "break-word", userSelect: "text",
    color: "var(--input-text, #ddd)", background: "var(--comfy-input-bg, #222)", borderRadius: "6px",
  });
  let value = "";
  // a fade over the bottom edge while more text is below it (scrolled away or not yet shown)
  const hint = () => {
    const more = el.scrollHeight - el.scrollTop - el.clientHeight > 2;
    el.style.boxShadow = more ? "inset 0 -14px 10px -8px rgba(0, 0, 0, 0.55)" : "none";
  };
  el.addEventListener("scroll", hint, {passive: true});
  const observer = typeof ResizeObserver === "function" ? new ResizeObserver(hint) : null;
  observer?.observe(el);
  const show = () => {
    // non-breaking hyphens: a label such as 'sdxl-50' is never split across lines
    el.textContent = (value || placeholder).replace(/-/g, "\u2011");
    el.style.opacity = value ? "1" : "0.6";
    el.style.color = value.startsWith(FAILED) ? "var(--error-text, #ff6b6b)" : "var(--input-text, #ddd)";
    el.scrollTop = 0;
    requestAnimationFrame(hint);
  };
  const height = boxHeight(type);
  // at least `height`; no maximum, so the box takes what a taller node gives it
  const widget = node.addDOMWidget(WIDGET, "cost_aware_router_report", el, {
    serialize: false, hideOnZoom: false, getMinHeight: () => height,
    getValue: () => value,
    setValue: (v) => {
      value = typeof v === "string" ? v : "";
      node.properties = node.properties || {};
      if (value) node.properties[PROPERTY] = value;
      else delete node.properties[PROPERTY];
      show();
    },
  });
  widget.serialize = false;
  const removed = node.onRemoved;
  node.onRemoved = function () {  // a deleted node's box is no longer watched
    observer?.disconnect();
    return removed?.apply(this, arguments);
  };
  show();
  return widget;
}

function reportWidget(node) {
  return node.widgets?.find((w) => w.name === WIDGET);
}

// A report that came from a run: show it and let the frontend persist the workflow with it.
function showReport(node, output) {
  const text = reportText(output);
  const w = reportWidget(node);
  if (!w || text === null || text === w.value) return;
  w.value = text;
  persist();
}

// Let the frontend save the workflow with the node's new report (kept across page loads).
function persist() {
  try {
    app.extensionManager?.workflow?.activeWorkflow?.changeTracker?.checkState?.();
  } catch (e) {
    console.debug("[CostAwareRouter] could not persist the report", e);
  }
}

// The node of an execution id: "12", or "3:12" for a node inside the subgraph node 3.
function nodeByExecutionId(id) {
  const direct = app.graph?.getNodeById?.(id);
  if (direct) return direct;
  let node = null;
  let graph = app.rootGraph ?? app.graph;
  for (const part of String(id ?? "").split(":")) {
    node = graph?.getNodeById?.(part) ?? graph?.getNodeById?.(Number(part));
    graph = node?.subgraph;
  }
  return node;
}

// What a failed node shows instead of its last report: the short error type and ComfyUI's message.
export function failureText(detail) {
  const type = String(detail?.exception_type ?? "error").split(".").pop();
  const message = String(detail?.exception_message ?? "").trim();
  return `${FAILED}${type}\n${message}\n\n(this node's last report was replaced; fix the cause and run again)`;
}

function showFailure(nodeId, text) {
  const node = nodeByExecutionId(nodeId);
  const w = node && REPORTS[node.type] ? reportWidget(node) : null;
  if (!w) return;
  w.value = text;
  persist();
}

// A node that raised while running.
api.addEventListener("execution_error", ({ detail }) => showFailure(detail?.node_id, failureText(detail)));

// A node whose inputs ComfyUI refused before running anything (the prompt was not queued): the same.
function showRefused(nodeErrors) {
  for (const [id, err] of Object.entries(nodeErrors || {})) {
    const lines = (err?.errors || []).map((e) => [e?.message, e?.details].filter(Boolean).join(": "));
    if (lines.length) showFailure(id, failureText({exception_type: "not queued", exception_message: lines.join("\n")}));
  }
}
if (typeof api.queuePrompt === "function") {
  const queuePrompt = api.queuePrompt;
  api.queuePrompt = async function () {
    try {
      const res = await queuePrompt.apply(this, arguments);
      showRefused(res?.node_errors);
      return res;
    } catch (e) {
      showRefused(e?.response?.node_errors);
      throw e;
    }
  };
}

app.registerExtension({
  name: "CostAwareRouter.NodeReports",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    const type = nodeData.name;
    if (!REPORTS[type]) return;
    const created = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const r = created?.apply(this, arguments);
      addReportBox(this, type);
      return r;
    };
    const executed = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      const r = executed?.apply(this, arguments);
      showReport(this, message);
      return r;
    };
    const configure = nodeType.prototype.onConfigure;
    nodeType.prototype.onConfigure = function (info) {
      const r = configure?.apply(this, arguments);
      const saved = info?.properties?.[PROPERTY];
      const w = reportWidget(this);
      if (w && typeof saved === "string") w.value = saved;
      return r;
    };
  },
  // outputs restored by the frontend (e.g. switching back to a workflow tab)
  onNodeOutputsUpdated(outputs) {
    for (const [id, output] of Object.entries(outputs || {})) {
      const node = app.graph?.getNodeById?.(id);
      // outputs restored on a tab switch or a workflow load are not a new run: they never hide a failure
      // that came after them (a new run's report arrives through onExecuted)
      if (node && REPORTS[node.type] && !reportWidget(node)?.value?.startsWith(FAILED)) showReport(node, output);
    }
  },
});
