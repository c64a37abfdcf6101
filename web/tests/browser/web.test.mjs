// End-to-end: pg_clip web in Debian's Chromium (playwright-core drives it; no browser is
// downloaded). Run by web/tests/run.sh, which starts the server on a test database.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

const url = process.env.PG_CLIP_WEB_URL;
const screens = process.env.PG_CLIP_WEB_SCREENS;
let browser;

before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
           `--use-file-for-fake-video-capture=${process.env.PG_CLIP_WEB_VIDEO}`],
  });
});
after(async () => { await browser?.close(); });

async function page() {
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  await context.addInitScript(() => localStorage.setItem("pg_clip.labeller", "tester"));
  await context.grantPermissions(["camera"], { origin: url });
  const p = await context.newPage();
  p.on("pageerror", (e) => { throw e; });
  return p;
}

async function json(path) {
  const r = await fetch(url + path);
  assert.equal(r.status, 200, path);
  return r.json();
}

test("label five images with the keyboard, undo one, see the refit notice", async () => {
  const p = await page();
  await p.goto(`${url}/label?collection=demo&classifier=packaging&classes=packaged,loose`);
  await p.waitForSelector("body[data-ready=true]");
  const seen = [];
  for (const key of ["a", "x", "1", "2", "a"]) {
    const id = await p.getAttribute("#current", "data-image-id");
    seen.push(Number(id));
    await p.keyboard.press(key);
    // auto-advance: the next image replaces this one
    await p.waitForFunction((old) => document.querySelector("#current").dataset.imageId !== old, id);
  }
  // the fifth label made the refit due (the test database refits every 19 labels; 14 were given)
  await p.waitForSelector(".notice:text('refitted to version 1')");
  await p.waitForSelector("#version:text('classifier version 1')");
  assert.equal(new Set(seen).size, 5, "five different images");
  // the vocabulary's packaging group scores the classes zero-shot
  assert.match(await p.textContent("#zero-shot"), /^loose \d+\.\d%, packaged \d+\.\d%$/);
  assert.equal(await p.locator("#recent figure").count(), 5);
  if (screens) await p.screenshot({ path: `${screens}/label.png` });

  await p.keyboard.press("?");
  await p.waitForSelector("#overlay:not(.hidden) kbd:text('Backspace')");
  await p.keyboard.press("Escape");

  await p.keyboard.press("Backspace");
  await p.waitForSelector(`.notice:text('undid packaged of image ${seen[4]}')`);
  assert.equal(Number(await p.getAttribute("#current", "data-image-id")), seen[4], "the undone image is shown again");
  assert.equal(await p.locator("#recent figure").count(), 4);

  const history = await json("/api/v1/collections/demo/classifiers/packaging/history?labelled_by=tester&n=20");
  assert.deepEqual(history.map((h) => [h.image_id, h.label, h.undo]), [
    [seen[4], null, true],
    [seen[4], "packaged", false], [seen[3], "loose", false], [seen[2], "packaged", false],
    [seen[1], "loose", false], [seen[0], "packaged", false],
  ]);
  const info = await json("/api/v1/collections/demo/classifiers/packaging");
  assert.equal(info.version, 1);
  assert.equal(info.labelled, 14 + 4);
});

test("identify a card through the camera and add it to the deck", async () => {
  const p = await page();
  await p.goto(`${url}/identify?set=demo_cards`);
  await p.waitForSelector("body[data-ready=true]");
  await p.click("#camera");
  // three frames in a row with the same best label above the margin threshold
  const row = await p.waitForSelector("#deck tbody tr", { timeout: 30000 });
  assert.equal(await row.getAttribute("data-label"), process.env.PG_CLIP_WEB_CARD);
  assert.equal(await p.getAttribute("#match", "data-label"), process.env.PG_CLIP_WEB_CARD);
  assert.equal(await p.locator("#deck tbody tr").count(), 1, "one card, counted once");
  if (screens) await p.screenshot({ path: `${screens}/identify.png` });
  await p.click("#undo");
  assert.equal(await p.locator("#deck tbody tr").count(), 0);
});

test("bulk-label in the review grid with click and shift-click, then undo", async () => {
  const p = await page();
  await p.goto(`${url}/review?collection=demo&classifier=keep_trash&classes=keep,trash`);
  await p.waitForSelector("body[data-ready=true]");
  const tiles = p.locator(".tile");
  const ids = await tiles.evaluateAll((ts) => ts.slice(0, 6).map((t) => Number(t.dataset.imageId)));
  await tiles.nth(1).click();
  await tiles.nth(4).click({ modifiers: ["Shift"] });
  await p.waitForSelector("#count:text('4 selected')");
  if (screens) await p.screenshot({ path: `${screens}/review.png` });
  await p.click("#classes button[data-label=trash]");
  await p.waitForSelector(".notice:text('labelled 4 as trash')");
  // the grid is shown again with the labels
  await p.waitForFunction(() => document.querySelectorAll(".tile .badge").length === 4);
  const badges = await p.locator(".tile").evaluateAll((ts) => ts.slice(0, 6).map((t) => t.querySelector(".badge")?.textContent ?? null));
  assert.deepEqual(badges, [null, "trash", "trash", "trash", "trash", null]);
  const labelled = await json(`/api/v1/collections/demo/grid?classifier=keep_trash&labelled=yes`);
  assert.deepEqual(labelled.tiles.map((t) => t.image_id).sort((a, b) => a - b), ids.slice(1, 5).sort((a, b) => a - b));

  await p.click("#undo");
  await p.waitForSelector(".notice:text('undid 4 labels')");
  assert.equal((await json(`/api/v1/collections/demo/grid?classifier=keep_trash&labelled=yes`)).total, 0);
  // a text search sorts by similarity and shows it on each tile
  await p.fill("#text", "a red star");
  await p.click("#filters button");
  await p.waitForSelector(".tile .score:text('sim ')");
});

test("find a duplicate: the larger file is kept, the copy trashed, the group saved", async () => {
  const p = await page();
  await p.goto(`${url}/duplicates?collection=demo`);
  await p.waitForSelector("body[data-ready=true]");
  const near = p.locator(".group", { has: p.locator("figure[data-image-id='242']") });
  assert.equal(await near.locator("figure[data-image-id='7']").getAttribute("data-decision"), "keep");
  assert.equal(await near.locator("figure[data-image-id='242']").getAttribute("data-decision"), "trash");
  if (screens) await p.screenshot({ path: `${screens}/duplicates.png` });
  await near.locator("button", { hasText: "save" }).click();
  await p.waitForSelector(".notice:text('1 kept, 1 trashed')");
  const h = await json("/api/v1/collections/demo/classifiers/dedupe/history?labelled_by=tester");
  assert.deepEqual(h.map((x) => [x.image_id, x.label]).sort(), [[242, "trash"], [7, "keep"]].sort());
  // keys: k keeps the whole current group
  await p.keyboard.press("k");
  assert.equal(await p.locator(".group.current figure[data-decision=trash]").count(), 0);
});

test("the attributes page draws the histogram under the calibration curve", async () => {
  const p = await page();
  await p.goto(`${url}/attributes?collection=demo`);
  await p.waitForSelector("body[data-ready=true]");
  await p.click("#list tr[data-code=card] a");
  await p.waitForSelector("body[data-shown=card]");
  const counts = await p.locator("#chart rect.bar").evaluateAll((bs) => bs.map((b) => Number(b.dataset.images)));
  assert.equal(counts.length, 40);
  assert.equal(counts.reduce((a, b) => a + b, 0), 242, "every scored image in a bar");
  assert.ok((await p.getAttribute("#curve", "d")).startsWith("M"));
  const api = await json("/api/v1/collections/demo/attributes");
  const card = api.attributes.find((a) => a.code === "card");
  await p.waitForSelector(`#accepted:text('${card.accepted} images accepted')`);
  if (screens) await p.screenshot({ path: `${screens}/attributes.png` });
});

test("the collections page lists the collections and links their pages", async () => {
  const p = await page();
  await p.goto(url + "/");
  await p.waitForSelector("a[href='/identify?set=demo_cards']");
  await p.waitForSelector("a[href='/label?collection=demo&classifier=packaging']");
  await p.waitForSelector("a[href='/review?collection=demo']");
  await p.waitForSelector("a[href='/attributes?collection=demo']");
  if (screens) await p.screenshot({ path: `${screens}/collections.png` });
});
