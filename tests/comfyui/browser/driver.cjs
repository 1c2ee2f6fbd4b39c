// Drives ComfyUI's real web page in headless Chromium (puppeteer-core) for tests/comfyui/test_browser.py.
//
//   node driver.cjs CONFIG.json
//
// CONFIG: {url, out_dir, node_modules, chromium, module, templates: [name], runs: {name: [edit]},
//          fail_runs: {name: [edit]}, refresh_before: [name], search_queries: [query], timeout_s}; an edit
//          is {type, widget, value}: what a person would type into that node's widget before pressing Run
//          (e.g. the scorer model they installed); fail_runs: edits for a second run of that template that
//          is expected to fail (the node must then show the error); refresh_before lists templates loaded
//          after pressing R (Refresh Node Definitions), as a person does once an earlier template has written
//          a file this one picks (a trained router); search_queries: words typed into the node search
//          (double click on empty canvas), first, on the page as it opens.
// Writes out_dir/results.json (what the page showed: template cards, every node's box and widget
// values, the reports drawn on the nodes, execution events, dialogs and page errors) and PNG
// screenshots into out_dir. The Python test makes the assertions.
"use strict";
const fs = require("fs");
const path = require("path");

const cfg = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const puppeteer = require(path.join(cfg.node_modules, "puppeteer-core"));
const OUT = cfg.out_dir;
const TIMEOUT = (cfg.timeout_s || 300) * 1000;
const results = {cards: [], templates: {}, page_errors: [], console_errors: [], steps: [], browser_dialogs: [],
  refreshed: {}};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const T0 = Date.now();
const mark = (step) => {
  results.steps.push({step, seconds: (Date.now() - T0) / 1000});
  console.log(`[driver] ${((Date.now() - T0) / 1000).toFixed(1)} s: ${step}`);
};
const save = () => fs.writeFileSync(path.join(OUT, "results.json"), JSON.stringify(results, null, 1));

async function waitForApp(page) {
  await page.waitForFunction(() => window.app && window.app.graph && window.app.extensionManager &&
    window.LiteGraph && document.querySelector('[data-testid="queue-button"]'), {timeout: 120000});
  await sleep(1500);
}

async function visibleDialogs(page) {
  return page.evaluate(() => [...document.querySelectorAll('[role="dialog"], .p-dialog, .p-toast-message')]
    .filter((e) => e.offsetParent !== null || getComputedStyle(e).position === "fixed")
    .map((e) => e.innerText.trim().slice(0, 500)).filter((t) => t));
}

async function closeDialogs(page) {
  for (let i = 0; i < 4 && (await visibleDialogs(page)).length; i++) {
    await page.keyboard.press("Escape");
    await sleep(400);
  }
}

async function openOurTemplates(page) {
  const open = () => page.evaluate((module) => [...document.querySelectorAll("[role=dialog] *")]
    .some((e) => e.children.length === 0 && e.textContent.trim() === module), cfg.module);
  if (!(await open())) {
    // not awaited: the command's promise may wait for the dialog to close
    await page.evaluate(() => { window.app.extensionManager.command.execute("Comfy.BrowseTemplates"); });
    await page.waitForFunction((module) => [...document.querySelectorAll("[role=dialog] *")]
      .some((e) => e.children.length === 0 && e.textContent.trim() === module), {timeout: 60000}, cfg.module);
  }
  // the pack's category in the left navigation (listed under "Extensions" by its folder name)
  await page.evaluate((module) => {
    const item = [...document.querySelectorAll("[role=dialog] *")]
      .find((e) => e.children.length === 0 && e.textContent.trim() === module);
    (item.closest("button, a, li, [role=button], [role=option]") || item).click();
  }, cfg.module);
  await page.waitForFunction((n) => document.querySelectorAll('[data-testid^="template-workflow-"]').length === n,
    {timeout: 60000}, cfg.templates.length);
  await page.waitForFunction(() => [...document.querySelectorAll('[data-testid^="template-workflow-"] img')]
    .every((i) => i.complete && i.naturalWidth > 0), {timeout: 60000});
  await sleep(1500);  // the cards fade their thumbnails in
}

// Screenshots: no minimap over the canvas, and nodes drawn in full at any zoom (no low-detail mode).
async function screenshotSettings(page) {
  await page.evaluate(async () => {
    for (const [id, value] of [["Comfy.Minimap.Visible", false], ["LiteGraph.Canvas.MinFontSizeForLOD", 0]]) {
      try {
        await window.app.extensionManager.setting.set(id, value);
      } catch (e) { /* an older frontend without this setting */ }
    }
  });
}

async function graphState(page) {
  return page.evaluate(() => {
    const state = {nodes: [], canvas_scale: window.app.canvas.ds.scale};
    for (const n of window.app.graph._nodes) {
      const report = n.widgets?.find((w) => w.name === "cost_aware_router_report");
      const ser = n.serialize();
      state.nodes.push({
        id: n.id, type: n.type, title: n.title, pos: [...n.pos], size: [...n.size],
        compute: [...n.computeSize()], bounding: [...n.boundingRect],
        registered: !!window.LiteGraph.registered_node_types[n.type], has_errors: !!n.has_errors,
        widgets_values: ser.widgets_values ?? null,
        report: report ? report.value : null,
        report_dom: report?.element ? report.element.textContent : null,
        report_box: report?.element ? report.element.getBoundingClientRect().height : null,
        // the text's size against its box: [scrollWidth, clientWidth, scrollHeight, clientHeight]
        report_scroll: report?.element ? [report.element.scrollWidth, report.element.clientWidth,
          report.element.scrollHeight, report.element.clientHeight] : null,
      });
    }
    return state;
  });
}

// Fit the graph to the viewport and take a screenshot.
async function shootAll(page, file) {
  await page.evaluate(() => window.app.extensionManager.command.execute("Comfy.Canvas.FitView"));
  await sleep(800);
  await page.screenshot({path: path.join(OUT, file)});
}

// Show the given nodes at 100% zoom (top-left at the first one) and screenshot that region, without
// the notification toasts and the queue banner.
async function shootNodes(page, ids, file, pad = 30) {
  const noToasts = await page.addStyleTag(
    {content: '.p-toast, [data-testid="queue-notification-banner"] { display: none !important; }'});
  const rect = await page.evaluate((ids, pad) => {
    const nodes = ids.map((id) => window.app.graph.getNodeById(id));
    const x0 = Math.min(...nodes.map((n) => n.boundingRect[0])) - pad;
    const y0 = Math.min(...nodes.map((n) => n.boundingRect[1])) - pad;
    const x1 = Math.max(...nodes.map((n) => n.boundingRect[0] + n.boundingRect[2])) + pad;
    const y1 = Math.max(...nodes.map((n) => n.boundingRect[1] + n.boundingRect[3])) + pad;
    const ds = window.app.canvas.ds;
    const canvas = window.app.canvas.canvas.getBoundingClientRect();
    // clear of the side bar, the tab and menu bars and the canvas controls
    const left = 80, top = 110, right = 20, bottom = 70;
    const w = canvas.width - left - right, h = canvas.height - top - bottom;
    const scale = Math.min(1, w / (x1 - x0), h / (y1 - y0));
    ds.scale = scale;
    ds.offset = [-x0 + left / scale, -y0 + top / scale];
    window.app.canvas.setDirty(true, true);
    return {x: canvas.left + left, y: canvas.top + top, width: Math.min(w, (x1 - x0) * scale),
      height: Math.min(h, (y1 - y0) * scale)};
  }, ids, pad);
  await sleep(800);
  await page.screenshot({path: path.join(OUT, file), clip: rect});
  await noToasts.evaluate((e) => e.remove());
}

// The node search as a person opens it: a double click on empty canvas; type each query and read the display
// names of the results in the order shown. Screenshot of the box for the first query.
async function searchNodes(page, queries) {
  const inputSel = 'input[role="combobox"][aria-controls="results-list"]';
  const point = await page.evaluate(() => {  // a canvas point clear of every node and of the page's overlays
    const c = window.app.canvas;
    const r = c.canvas.getBoundingClientRect();
    for (let y = r.top + 200; y < r.bottom - 150; y += 40) {
      for (let x = r.left + 150; x < r.right - 150; x += 40) {
        const [gx, gy] = c.ds.convertCanvasToOffset([x - r.left, y - r.top]);
        const onNode = window.app.graph._nodes.some((n) => {
          const b = n.boundingRect;
          return gx > b[0] - 30 && gx < b[0] + b[2] + 30 && gy > b[1] - 30 && gy < b[1] + b[3] + 30;
        });
        if (!onNode && document.elementFromPoint(x, y) === c.canvas) return {x, y};
      }
    }
    return null;
  });
  const out = {point, opened_by: null, results: {}};
  if (point) {
    await page.mouse.click(point.x, point.y, {count: 2, clickCount: 2});
    if (await page.waitForSelector(inputSel, {visible: true, timeout: 5000}).catch(() => null)) {
      out.opened_by = "double click";
    }
  }
  if (!out.opened_by) {  // the command behind the double click, so the ranking is still checked
    await page.evaluate(() => { window.app.extensionManager.command.execute("Workspace.SearchBox.Toggle"); });
    await page.waitForSelector(inputSel, {visible: true, timeout: 10000});
    out.opened_by = "command";
  }
  for (const [i, query] of queries.entries()) {
    await page.click(inputSel, {count: 3, clickCount: 3});
    await page.keyboard.press("Backspace");
    await page.type(inputSel, query);
    await page.waitForFunction((q, sel) => document.querySelector(sel)?.value === q &&
      document.querySelector('[data-testid="result-item"], [data-testid="no-results"]'), {timeout: 10000},
    query, inputSel);
    await sleep(500);  // the list follows the input
    out.results[query] = await page.evaluate(() => [...document.querySelectorAll('[data-testid="result-item"]')]
      .slice(0, 10).map((e) => e.querySelector(".option-container span.truncate")?.textContent.trim() ?? ""));
    if (i === 0) {
      const box = await page.evaluate((sel) => {
        const d = document.querySelector(sel).closest('[role="dialog"]') ?? document.querySelector(sel).parentElement
          .parentElement.parentElement.parentElement;
        const b = d.getBoundingClientRect();
        return {x: b.left, y: b.top, width: Math.min(b.width, 1920 - b.left), height: Math.min(b.height, 1080 - b.top)};
      }, inputSel);
      await page.screenshot({path: path.join(OUT, "node_search.png"), clip: box});
    }
  }
  await page.keyboard.press("Escape");
  await sleep(400);
  await closeDialogs(page);
  return out;
}

async function applyEdits(page, edits) {
  return page.evaluate((edits) => {
    const done = [];
    for (const e of edits || []) {
      for (const n of window.app.graph._nodes.filter((n) => n.type === e.type)) {
        const w = n.widgets?.find((w) => w.name === e.widget);
        if (!w) throw new Error(`${e.type} has no widget ${e.widget}`);
        w.value = e.value;
        w.callback?.(w.value);
        done.push([n.id, e.widget, e.value]);
      }
    }
    window.app.graph.setDirtyCanvas(true, true);
    return done;
  }, edits);
}

// Press the Run button and wait for the prompt to finish; returns the execution events it saw.
async function run(page) {
  // a run that outlasted TIMEOUT (a slow, shared machine) must not be taken for this one: start on an empty queue
  const idle = Date.now();
  while (Date.now() - idle < TIMEOUT) {
    const busy = await page.evaluate(async () => {
      const q = await window.app.api.getQueue();
      return q.Running.length + q.Pending.length;
    });
    if (!busy) break;
    await sleep(500);
  }
  await page.evaluate(() => {
    window.__car = {events: []};
    for (const type of ["execution_start", "execution_cached", "executed", "execution_success", "execution_error",
      "execution_interrupted"]) {
      window.app.api.addEventListener(type, (e) => window.__car.events.push({type, detail: e.detail}));
    }
  });
  await page.click('[data-testid="queue-button"]');
  const start = Date.now();
  while (Date.now() - start < TIMEOUT) {
    const end = await page.evaluate(() => window.__car.events.find((e) =>
      ["execution_success", "execution_error", "execution_interrupted"].includes(e.type))?.type);
    if (end) break;
    const dialogs = await visibleDialogs(page);
    if (dialogs.some((d) => /error|invalid|failed|missing/i.test(d)) && Date.now() - start > 3000) break;
    await sleep(250);
  }
  await sleep(1200);  // let the frontend draw what it received
  return page.evaluate(() => window.__car.events.map((e) => ({type: e.type, node: e.detail?.node ?? null,
    nodes: e.detail?.nodes ?? null, text: e.detail?.output?.text ?? null,
    error: e.detail?.exception_message ?? null})));
}

async function main() {
  fs.mkdirSync(OUT, {recursive: true});
  const browser = await puppeteer.launch({
    executablePath: cfg.chromium, headless: true, protocolTimeout: TIMEOUT + 60000,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      `--user-data-dir=${path.join(OUT, "chromium-profile")}`, "--window-size=1920,1080"],
  });
  try {
    const page = await browser.newPage();
    await page.setViewport({width: 1920, height: 1080});
    page.on("pageerror", (e) => results.page_errors.push(String(e.message || e)));
    // "leave the page with unsaved changes?" on reload, and any other browser dialog: accept, note it
    page.on("dialog", async (d) => {
      results.browser_dialogs.push(`${d.type()}: ${d.message()}`);
      await d.accept();
    });
    page.on("console", (m) => { if (m.type() === "error") results.console_errors.push(m.text().slice(0, 500)); });
    await page.goto(cfg.url, {waitUntil: "networkidle2", timeout: 120000});
    await waitForApp(page);
    await sleep(2000);  // a first visit opens the template browser by itself; close it
    await closeDialogs(page);
    await screenshotSettings(page);
    mark("page ready");

    if (cfg.search_queries) {  // the node search: what a person finds when typing the pack's words
      results.search = await searchNodes(page, cfg.search_queries);
      mark("node search");
      save();
    }

    // the template browser: our cards, their titles and thumbnails
    await openOurTemplates(page);
    results.cards = await page.evaluate(() => [...document.querySelectorAll('[data-testid^="template-workflow-"]')]
      .map((c) => {
        const img = c.querySelector("img");
        const box = c.getBoundingClientRect();
        return {name: c.dataset.testid.replace("template-workflow-", ""), text: c.innerText.trim(),
          img: img ? {src: img.getAttribute("src"), natural: [img.naturalWidth, img.naturalHeight],
            shown: [img.getBoundingClientRect().width, img.getBoundingClientRect().height]} : null,
          card: [box.width, box.height]};
      }));
    const dialog = await page.evaluate(() => {
      const cards = document.querySelector('[data-testid^="template-workflow-"]');
      const d = cards?.closest('[role="dialog"]')?.getBoundingClientRect();
      return d ? {x: d.left, y: d.top, width: d.width, height: d.height} : null;
    });
    await page.screenshot({path: path.join(OUT, "template_browser_default_order.png"),
      ...(dialog ? {clip: dialog} : {})});
    await page.keyboard.press("Escape");
    await sleep(500);
    // ComfyUI lists a pack's templates in the server's directory order; Sort: Alphabetical (the setting behind
    // the browser's sort menu) lists the numbered names in the path's order, as the README says
    results.sort_setting = await page.evaluate(async () => {
      try {
        await window.app.extensionManager.setting.set("Comfy.Templates.SortBy", "alphabetical");
        return window.app.extensionManager.setting.get("Comfy.Templates.SortBy");
      } catch (e) { return `not set: ${e}`; }
    });
    await openOurTemplates(page);
    results.cards_sorted = await page.evaluate(() => [...document.querySelectorAll('[data-testid^="template-workflow-"]')]
      .map((c) => c.dataset.testid.replace("template-workflow-", "")));
    await page.screenshot({path: path.join(OUT, "template_browser.png"), ...(dialog ? {clip: dialog} : {})});
    await page.keyboard.press("Escape");
    await sleep(500);
    save();

    for (const name of cfg.templates) {
      const t = results.templates[name] = {};
      if ((cfg.refresh_before || []).includes(name)) {
        // press R on the canvas, as the Train node's report says; the router lists then hold the new file
        mark(`press R (refresh node definitions) before ${name}`);
        const routerOptions = () => page.evaluate(() => {  // the router list of the Route node's definition
          const def = window.LiteGraph.registered_node_types["CostAwareRouter.Route"]?.nodeData;
          return JSON.stringify(def?.input?.required?.router ?? def?.inputs?.router ?? "").includes("my_router.")
            ? ["my_router.safetensors"] : [];
        });
        await page.evaluate(() => document.activeElement?.blur?.());
        await page.focus("canvas").catch(() => {});
        await page.keyboard.press("r");
        let pressed = false;
        for (let i = 0; i < 40 && !pressed; i++) {
          await sleep(250);
          pressed = (await routerOptions()).includes("my_router.safetensors");
        }
        if (!pressed) {  // no router node on this canvas to watch: the key's command, to be sure
          await page.evaluate(() => window.app.extensionManager.command.execute("Comfy.RefreshNodeDefinitions"));
          await sleep(1500);
        }
        results.refreshed[name] = {pressed_r_seen: pressed};
      }
      mark(`load ${name}`);
      // load it as a person does: template browser -> the pack -> the card
      await openOurTemplates(page);
      await page.click(`[data-testid="template-workflow-${name}"]`);
      await page.waitForFunction((n) => !document.querySelector('[data-testid^="template-workflow-"]') &&
        window.app.graph._nodes.length > 0 && window.app.extensionManager.workflow?.activeWorkflow?.filename === n,
      {timeout: 60000}, name).catch(() => {});
      await sleep(1500);
      t.active_workflow = await page.evaluate(() => window.app.extensionManager.workflow?.activeWorkflow?.filename);
      t.dialogs_after_load = await visibleDialogs(page);
      t.loaded = await graphState(page);
      if (results.refreshed[name]) {
        results.refreshed[name].router_options_have_my_router = await page.evaluate(() =>
          window.app.graph._nodes.filter((n) => n.type === "CostAwareRouter.Route").every((n) =>
            (n.widgets.find((w) => w.name === "router")?.options?.values || []).includes("my_router.safetensors")));
      }
      await shootAll(page, `${name}_loaded.png`);
      const note = t.loaded.nodes.find((n) => n.type === "MarkdownNote");
      if (note) await shootNodes(page, [note.id], `${name}_note.png`, 10);
      if (!(name in (cfg.runs || {}))) continue;

      t.edits = await applyEdits(page, cfg.runs[name]);
      mark(`run ${name}`);
      t.events = await run(page);
      mark(`ran ${name}`);
      t.dialogs_after_run = await visibleDialogs(page);
      t.after_run = await graphState(page);
      await shootAll(page, `${name}_run.png`);
      const ours = t.after_run.nodes.filter((n) => n.report !== null).map((n) => n.id);
      for (const id of ours) {
        const n = t.after_run.nodes.find((x) => x.id === id);
        await shootNodes(page, [id], `${name}_${n.type.replace("CostAwareRouter.", "")}_${id}.png`, 10);
      }
      await closeDialogs(page);
      save();

      if (cfg.fail_runs && cfg.fail_runs[name]) {
        // a second run that fails: the node shows the error instead of the last report
        t.fail_edits = await applyEdits(page, cfg.fail_runs[name]);
        mark(`failing run of ${name}`);
        t.fail_events = await run(page);
        t.dialogs_after_fail = await visibleDialogs(page);
        t.after_fail = await graphState(page);
        await closeDialogs(page);
        for (const e of cfg.fail_runs[name]) {
          const n = t.after_fail.nodes.find((x) => x.type === e.type);
          if (n) await shootNodes(page, [n.id], `${name}_${n.type.replace("CostAwareRouter.", "")}_failed.png`, 10);
        }
        save();
      }

      if (name === "1_route_and_generate") {
        // a new page session: the decision is still on the router node
        mark("reload");
        await page.reload({waitUntil: "networkidle2", timeout: 120000});
        await waitForApp(page);
        await closeDialogs(page);
        t.reloaded_workflow = await page.evaluate(() => window.app.extensionManager.workflow?.activeWorkflow?.filename);
        t.after_reload = await graphState(page);
        // a cached re-run: forget what the node shows, press Run, ComfyUI re-sends the cached report
        await page.evaluate(() => {
          for (const n of window.app.graph._nodes) {
            const w = n.widgets?.find((w) => w.name === "cost_aware_router_report");
            if (w) w.value = "";
          }
        });
        t.cleared = await graphState(page);
        mark("cached re-run");
        t.cached_events = await run(page);
        mark("cached re-run done");
        t.after_cached_run = await graphState(page);
        const router = t.after_cached_run.nodes.find((n) => n.type === "CostAwareRouter.Route");
        await shootNodes(page, [router.id], "1_route_and_generate_router_after_cached_rerun.png", 10);
        const flow = t.after_cached_run.nodes.filter((n) => !["MarkdownNote", "CostAwareRouter.Candidate"]
          .includes(n.type)).map((n) => n.id);
        await shootNodes(page, flow, "1_route_and_generate_flow.png", 20);
        save();
      }
    }
  } finally {
    mark("done");
    save();
    await browser.close();
  }
}

main().catch((e) => {
  results.fatal = String(e && e.stack || e);
  save();
  console.error(e);
  process.exit(1);
});
