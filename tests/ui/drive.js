// Drives the stock page in headless Chromium for tests/test_ui.py and prints what a person
// would see as JSON on stdout. Usage: node drive.js '<json options>'
//   {"url", "badKey", "key", "skus", "screenshot", "chromium"}
"use strict";

const path = require("path");
const { chromium } = require(path.join(__dirname, "node_modules", "playwright-core"));

const FLAGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
  "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage",
];

async function visibleText(page, selector) {
  const el = await page.$(selector);
  if (!el || !(await el.isVisible())) return null;
  return (await el.textContent()).trim();
}

async function rows(page) {
  return page.$$eval("#results tbody tr", (trs) => trs.map((tr) => ({
    kind: tr.dataset.kind,
    sku: tr.dataset.sku,
    name: tr.dataset.name || null,
    status: tr.dataset.status,
    classes: tr.className,
    atp: (tr.querySelector(".atp") || {}).textContent || null,
    cells: Array.from(tr.children).map((c) => c.textContent.trim()),
    badgeColor: (() => {
      const b = tr.querySelector(".badge");
      return b ? getComputedStyle(b).color : null;
    })(),
  })));
}

async function waitIdle(page) {
  await page.waitForFunction(() => {
    const b = document.getElementById("check");
    return b && !b.disabled;
  }, null, { timeout: 15000 });
}

(async () => {
  const opts = JSON.parse(process.argv[2]);
  const browser = await chromium.launch({ executablePath: opts.chromium, args: FLAGS });
  const out = { console: [] };
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    page.on("console", (m) => out.console.push(m.type() + ": " + m.text()));
    page.on("pageerror", (e) => out.console.push("pageerror: " + e.message));
    await page.goto(opts.url + "/ui/stock", { waitUntil: "load" });
    out.keyFormShown = await page.isVisible("#key-form");

    // a wrong key: the problem JSON is shown readably, and the key form comes back
    await page.fill("#key", opts.badKey);
    await page.click("#key-form button[type=submit]");
    await page.fill("#skus", opts.skus);
    await page.click("#check");
    await page.waitForSelector("#message:not([hidden])", { timeout: 15000 });
    await waitIdle(page);
    out.badKeyMessage = await visibleText(page, "#message");
    out.keyFormAfter401 = await page.isVisible("#key-form");
    if (opts.errorScreenshot) await page.screenshot({ path: opts.errorScreenshot });

    // the right key: submitting it re-runs the lookup
    await page.fill("#key", opts.key);
    await page.click("#key-form button[type=submit]");
    await page.waitForSelector("#results:not([hidden]) tbody tr", { timeout: 15000 });
    await waitIdle(page);
    out.rows = await rows(page);
    out.message = await visibleText(page, "#message");
    out.freshness = await visibleText(page, "#freshness");
    out.service = await visibleText(page, "#service");
    out.keyStored = await page.evaluate(() => sessionStorage.getItem("atp.apiKey"));
    await page.screenshot({ path: opts.screenshot, fullPage: true });

    // the key survives a reload of the tab; ?skus= looks up at once
    await page.goto(opts.url + "/ui/stock?skus=S1", { waitUntil: "load" });
    await page.waitForSelector("#results:not([hidden]) tbody tr", { timeout: 15000 });
    await waitIdle(page);
    out.keyFormAfterReload = await page.isVisible("#key-form");
    out.reloadRows = (await rows(page)).map((r) => [r.kind, r.name, r.atp]);
  } finally {
    await browser.close();
  }
  process.stdout.write(JSON.stringify(out) + "\n");
})().catch((err) => {
  process.stderr.write(String(err && err.stack || err) + "\n");
  process.exit(1);
});
