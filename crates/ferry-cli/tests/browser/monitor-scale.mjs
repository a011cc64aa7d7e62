// The Monitoring page on a large cluster (the monitor benchmark): for each view, how long it
// takes to show after navigation and the longest main-thread task while it stays open through
// two refreshes (every 5 s). Prints one JSON line: {views: {name: {ready_ms, longest_task_ms, rows}}, cards}.
// Usage: node monitor-scale.mjs URL TOKEN SCREENSHOT_PREFIX CLUSTER GROUP TOPIC
import { withPage, signIn } from './chromium.mjs';

const [url, token, shots, cluster, group, topic] = process.argv.slice(2);
await withPage(url, { width: 1400, height: 1000 }, async (page, seen) => {
  if (await signIn(page, await page.goto(url + 'monitor'), token, seen)) {
    await page.goto(url + 'monitor');
  }
  await page.locator('#cards .card').first().waitFor({ timeout: 30000 });
  await page.evaluate(() => {
    window.__longest = 0;
    new PerformanceObserver(list => list.getEntries().forEach(e => { window.__longest = Math.max(window.__longest, e.duration); })).observe({ type: 'longtask' });
  });
  seen.views = {};
  const view = async (name, hash, ready) => {
    await page.evaluate(() => { window.__longest = 0; });
    const started = Date.now();
    // A hash change re-renders in place, as a click in the navigation does.
    await page.evaluate(h => { location.hash = h; }, new URLSearchParams(Object.assign({ c: cluster }, hash)).toString());
    await page.locator(ready).first().waitFor({ timeout: 30000 });
    const ready_ms = Date.now() - started;
    await page.waitForTimeout(11000);
    seen.views[name] = { ready_ms, longest_task_ms: await page.evaluate(() => window.__longest), rows: await page.locator('main table tbody tr').count() };
    await page.screenshot({ path: `${shots}-${name}.png` });
  };
  await view('overview', { v: 'overview' }, '#cards .card');
  seen.cards = await page.locator('#cards .card').allTextContents();
  await view('topics', { v: 'topics' }, 'tr[data-t]');
  await view('groups', { v: 'groups' }, 'tr[data-g]');
  await view('group', { v: 'group', g: group }, '#lagchart');
  await view('topic', { v: 'topic', t: topic }, '#consumers');
});
