// Measures a rendered page and writes its findings, as JSON, into a new script element
// (type application/json, id oluo-page-check) so `chromium --dump-dom` carries them out. Run on the window's load event (images and layout are final by then).
(function () {
  "use strict";
  const RAW_MARKUP = /<\/?(table|thead|tbody|tr|td|th|div|span|svg|rect|details|summary|code|pre|img|style|script|br|caption)\b[^<>]{0,200}>|&(lt|gt|amp|quot|#x?[0-9a-fA-F]+);/i;
  const SKIP_TEXT = "script, style, .jp-InputArea, .jp-InputPrompt, .jp-OutputPrompt";
  // Containers as wide as the page that scroll the whole document: they are the page,
  // not a local box a wide table may scroll in.
  const PAGE_BOXES = "html, body, main, .jp-Notebook";

  function describe(el) {
    let s = el.tagName.toLowerCase();
    if (el.id) s += "#" + el.id;
    const cls = el.getAttribute("class");
    if (cls) s += "." + cls.trim().split(/\s+/).slice(0, 3).join(".");
    const cell = el.closest(".jp-Cell");
    if (cell) {
      const cells = Array.from(document.querySelectorAll(".jp-Cell"));
      s = "cell " + cells.indexOf(cell) + " > " + s;
    }
    const section = el.closest("section");
    if (section && section.querySelector("h2")) {
      s = "section '" + section.querySelector("h2").textContent.trim() + "' > " + s;
    }
    const text = (el.textContent || "").trim().replace(/\s+/g, " ").slice(0, 80);
    return text ? s + " [" + text + "]" : s;
  }

  function run() {
    const page = document.documentElement;
    const width = page.clientWidth;
    const out = {
      page_width: width,
      scroll_width: page.scrollWidth,
      scroll_height: page.scrollHeight,
      too_wide: [],
      cut: [],
      scrolls: [],
      raw_markup: [],
      widget_placeholders: [],
      broken_images: [],
      images: 0,
    };
    const elements = Array.from(document.body.querySelectorAll("*"));
    for (const el of elements) {
      if (el.closest("script, style, head")) continue;
      const r = el.getBoundingClientRect();
      if (r.width === 0 || r.height === 0) continue;
      // The nearest ancestor that does not let content overflow decides: a box that
      // scrolls sideways holds it (the box itself is measured in turn); a box that
      // hides overflow cuts it; with neither, the element must fit the page.
      let holder = null;
      let mode = "page";
      for (let a = el.parentElement; a && a !== document.body; a = a.parentElement) {
        if (a.matches(PAGE_BOXES)) continue;
        const ox = getComputedStyle(a).overflowX;
        if (ox === "auto" || ox === "scroll") { mode = "scroll"; holder = a; break; }
        if (ox === "hidden" || ox === "clip") { mode = "clip"; holder = a; break; }
      }
      if (mode === "scroll") continue;
      if (mode === "clip") {
        const h = holder.getBoundingClientRect();
        if (r.right > h.right + 1 || r.left < h.left - 1) out.cut.push(describe(el));
        continue;
      }
      if (r.right > width + 1 || r.left < -1) {
        out.too_wide.push(describe(el) + " width " + Math.round(r.width) + "px");
      }
    }
    for (const el of elements) {
      if (el.matches(PAGE_BOXES)) continue;
      const ox = getComputedStyle(el).overflowX;
      if ((ox === "auto" || ox === "scroll") && el.scrollWidth > el.clientWidth + 1) {
        out.scrolls.push(describe(el) + " scrolls sideways: " + el.scrollWidth + "px in " + el.clientWidth + "px");
      }
    }
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    for (let n = walker.nextNode(); n; n = walker.nextNode()) {
      const parent = n.parentElement;
      if (!parent || parent.closest(SKIP_TEXT)) continue;
      const m = RAW_MARKUP.exec(n.nodeValue);
      if (m) out.raw_markup.push(describe(parent) + " shows " + JSON.stringify(m[0]));
    }
    const widgetViews = document.querySelectorAll(
      'script[type="application/vnd.jupyter.widget-view+json"]'
    );
    for (const s of widgetViews) {
      const area = s.closest(".jp-OutputArea-output") || s.parentElement;
      const shown = Array.from(area.children).some(
        (c) => c !== s && c.tagName !== "SCRIPT" && c.getBoundingClientRect().height > 0
      );
      if (!shown) out.widget_placeholders.push(describe(area));
    }
    const text = document.body.innerText || "";
    for (const phrase of ["Loading widget", "Error displaying widget", "Widget Javascript not detected"]) {
      if (text.includes(phrase)) out.widget_placeholders.push("page text: " + phrase);
    }
    for (const img of document.images) {
      out.images += 1;
      if (!img.complete || img.naturalWidth === 0) {
        out.broken_images.push(describe(img) + " src " + (img.getAttribute("src") || "").slice(0, 60));
      }
    }
    const node = document.createElement("script");
    node.type = "application/json";
    node.id = "oluo-page-check";
    node.textContent = JSON.stringify(out);
    document.body.appendChild(node);
  }

  if (document.readyState === "complete") run();
  else window.addEventListener("load", run);
})();
