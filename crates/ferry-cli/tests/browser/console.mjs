// Loads the Ferry console in headless Chromium, signs in with the token, waits for the
// topology edge and the topic row, saves a screenshot, and prints what it saw as JSON.
// Usage: node console.mjs URL TOKEN SCREENSHOT FLOW REMOTE_TOPIC [FAILED_FLOW]
// With FAILED_FLOW, also waits until that flow's edge is flagged (class `bad`).
import { chromium } from 'playwright-core';

const [url, token, screenshot, flow, remoteTopic, failedFlow] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync'],
});
const seen = { signin: false, edge: null, topicRow: null, errors: [] };
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
  page.on('pageerror', e => seen.errors.push(String(e)));
  page.on('request', r => { if (!r.url().startsWith(url)) seen.errors.push('external request: ' + r.url()); });
  const first = await page.goto(url);
  if (first.status() === 401) {
    seen.signin = true;
    await page.fill('#t', token);
    await page.click('button[type=submit]');
  }
  const edge = page.locator(`#topology g.edge[data-flow="${flow}"]`);
  await edge.waitFor({ timeout: 20000 });
  seen.edge = { text: await edge.locator('text').textContent(), class: await edge.getAttribute('class') };
  const row = page.locator('#topics tbody tr', { hasText: remoteTopic });
  await row.first().waitFor({ timeout: 20000 });
  seen.topicRow = (await row.first().locator('td').allTextContents());
  seen.nodes = await page.locator('#topology g.node').evaluateAll(ns => ns.map(n => n.getAttribute('data-cluster')));
  if (failedFlow) {
    const bad = page.locator(`#topology g.edge.bad[data-flow="${failedFlow}"]`);
    await bad.waitFor({ timeout: 20000 });
    seen.failed = { text: await bad.locator('text').textContent(), rowClass: await page.locator(`#flows tr[data-flow="${failedFlow}"]`).getAttribute('class') };
  }
  await page.screenshot({ path: screenshot, fullPage: true });
} catch (e) {
  seen.errors.push(String(e));
} finally {
  await browser.close();
}
console.log(JSON.stringify(seen));
process.exit(seen.errors.length ? 1 : 0);
