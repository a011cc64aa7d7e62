// Loads the Ferry console in headless Chromium, signs in with the token, waits for the
// topology edge and the topic row, saves a screenshot, and prints what it saw as JSON.
// Usage: node console.mjs URL TOKEN SCREENSHOT FLOW REMOTE_TOPIC [FAILED_FLOW]
// With FAILED_FLOW, also waits until that flow's edge is flagged (class `bad`).
import { withPage, signIn } from './chromium.mjs';

const [url, token, screenshot, flow, remoteTopic, failedFlow] = process.argv.slice(2);
await withPage(url, { width: 1280, height: 1000 }, async (page, seen) => {
  seen.edge = null; seen.topicRow = null;
  await signIn(page, await page.goto(url), token, seen);
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
});
